//! The event schemas eddy knows, each defined once.
//!
//! One [`SchemaDef`] table per seed schema feeds topology validation (which fields exist, which
//! time formats fit the time field), the decoder (which fields are required and of what JSON
//! type), `eddy topology describe`, and the schema reference in docs/topology.md
//! (`eddy topology schemas`).
//! The tables follow what Go's `encoding/json` writes for the seed services' structs: an `int64`
//! is a JSON number, a `time.Time` an RFC 3339 string, and an `omitempty` field may be absent.

mod time_format;

pub use time_format::{TimeFormat, TimeParseError, MAX_EVENT_TIME_MS};

use std::fmt::Write;

/// The JSON type a field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without a fraction.
    Integer,
    /// An object of string values (Go `map[string]string`).
    StringMap,
    /// An array of objects with these fields (the one array a schema can explode).
    Array(&'static [FieldDef]),
    /// A string holding a JSON object (Go `Data string` set to `json.Marshal` output). Its
    /// fields are read as `<field>.<key>`; a string that is not a JSON object is a decode error.
    JsonObjectString,
}

impl FieldType {
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::StringMap => "object of strings",
            FieldType::Array(_) => "array of objects",
            FieldType::JsonObjectString => "string holding a JSON object",
        }
    }

    /// Whether a time format can read a field of this type.
    pub fn fits(self, format: TimeFormat) -> bool {
        match self {
            FieldType::String => format == TimeFormat::Rfc3339,
            FieldType::Number | FieldType::Integer => format != TimeFormat::Rfc3339,
            _ => false,
        }
    }
}

/// One field of a schema, as the producing service's Go struct declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    /// `false` for `omitempty` fields, which Go leaves out when empty.
    pub required: bool,
    /// The Go declaration it comes from, for the reference documentation.
    pub go: &'static str,
}

const fn field(name: &'static str, ty: FieldType, go: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: true,
        go,
    }
}

const fn optional(name: &'static str, ty: FieldType, go: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: false,
        go,
    }
}

/// A seed event schema.
#[derive(Debug, PartialEq, Eq)]
pub struct SchemaDef {
    /// The name topology files use (`schema = "order_created"`).
    pub name: &'static str,
    pub go_struct: &'static str,
    pub producer: &'static str,
    pub fields: &'static [FieldDef],
    /// The field holding event time and the one format that reads it.
    pub time: (&'static str, TimeFormat),
}

/// Every record may carry a schema version; absent means version 1.
pub const VERSION_FIELD: &str = "version";

const ORDER_ITEM: &[FieldDef] = &[
    field("product_id", FieldType::String, "ProductID string"),
    field("quantity", FieldType::Integer, "Quantity int"),
    field("unit_price", FieldType::Number, "UnitPrice float64"),
];

/// Seed 000's `OrderCreatedEvent`.
pub static ORDER_CREATED: SchemaDef = SchemaDef {
    name: "order_created",
    go_struct: "OrderCreatedEvent",
    producer: "the order service (seed 000)",
    fields: &[
        field("order_id", FieldType::String, "OrderID string"),
        field("user_id", FieldType::String, "UserID string"),
        field("items", FieldType::Array(ORDER_ITEM), "Items []OrderItem"),
        field("total_amount", FieldType::Number, "TotalAmount float64"),
        field(
            "timestamp",
            FieldType::Integer,
            "Timestamp int64 (Unix seconds)",
        ),
    ],
    time: ("timestamp", TimeFormat::EpochSeconds),
};

/// Seed 002's `AnalyticsEvent`.
pub static ANALYTICS_EVENT: SchemaDef = SchemaDef {
    name: "analytics_event",
    go_struct: "AnalyticsEvent",
    producer: "the analytics service's producers (seed 002)",
    fields: &[
        optional("id", FieldType::String, "ID string, omitempty"),
        field("timestamp", FieldType::String, "Timestamp time.Time"),
        field("eventType", FieldType::String, "EventType string"),
        field("userId", FieldType::String, "UserID string"),
        optional(
            "properties",
            FieldType::StringMap,
            "Properties map[string]string, omitempty",
        ),
    ],
    time: ("timestamp", TimeFormat::Rfc3339),
};

/// Seed 001's `Event`, as its event bus publishes it (subjects `domain.event`, e.g. `user.created`).
pub static DOMAIN_EVENT: SchemaDef = SchemaDef {
    name: "domain_event",
    go_struct: "Event",
    producer: "the event bus (seed 001)",
    fields: &[
        field("id", FieldType::String, "ID string"),
        field("type", FieldType::String, "Type string"),
        field(
            "data",
            FieldType::JsonObjectString,
            "Data string (JSON of the event's payload)",
        ),
        field("timestamp", FieldType::String, "Timestamp time.Time"),
    ],
    time: ("timestamp", TimeFormat::Rfc3339),
};

/// Every seed schema's table, in the order the reference lists them.
pub static SEED_SCHEMAS: [&SchemaDef; 3] = [&ORDER_CREATED, &ANALYTICS_EVENT, &DOMAIN_EVENT];

/// The schemas a source can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    OrderCreated,
    AnalyticsEvent,
    DomainEvent,
    /// Any JSON object; only the fields the aggregations use are read.
    Json,
}

impl Schema {
    pub const ALL: [Schema; 4] = [
        Schema::OrderCreated,
        Schema::AnalyticsEvent,
        Schema::DomainEvent,
        Schema::Json,
    ];
    pub const NAMES: &'static str = "`order_created`, `analytics_event`, `domain_event` or `json`";

    pub fn parse(name: &str) -> Option<Schema> {
        Schema::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self.def() {
            Some(def) => def.name,
            None => "json",
        }
    }

    /// The field table; `None` for free-form JSON.
    pub fn def(self) -> Option<&'static SchemaDef> {
        match self {
            Schema::OrderCreated => Some(&ORDER_CREATED),
            Schema::AnalyticsEvent => Some(&ANALYTICS_EVENT),
            Schema::DomainEvent => Some(&DOMAIN_EVENT),
            Schema::Json => None,
        }
    }
}

impl SchemaDef {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The array field whose elements have `item`, if any.
    pub fn array_with_item(&self, item: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(
            |f| matches!(f.ty, FieldType::Array(items) if items.iter().any(|i| i.name == item)),
        )
    }

    /// For `data.user_id`: the field holding a JSON object in a string (`data`) and the key read
    /// from that object (`user_id`).
    pub fn embedded<'n>(&self, name: &'n str) -> Option<(&'static FieldDef, &'n str)> {
        let (outer, key) = name.split_once('.')?;
        let field = self.field(outer)?;
        (field.ty == FieldType::JsonObjectString && !key.is_empty()).then_some((field, key))
    }

    pub fn field_names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The schema reference as Markdown (the "Schemas" section of docs/topology.md is this text).
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for def in SEED_SCHEMAS {
        let _ = writeln!(
            out,
            "`{}`: Go `{}` from {}; event time `{}` read as `{}`.\n",
            def.name,
            def.go_struct,
            def.producer,
            def.time.0,
            def.time.1.name()
        );
        let _ = writeln!(out, "| field | JSON type | required | Go |");
        let _ = writeln!(out, "|---|---|---|---|");
        let mut rows = |prefix: &str, fields: &[FieldDef]| {
            for f in fields {
                let _ = writeln!(
                    out,
                    "| `{prefix}{}` | {} | {} | `{}` |",
                    f.name,
                    f.ty.describe(),
                    if f.required { "yes" } else { "no (omitempty)" },
                    f.go
                );
            }
        };
        rows("", def.fields);
        for f in def.fields {
            if let FieldType::Array(items) = f.ty {
                rows(&format!("{}[].", f.name), items);
            }
        }
        for f in def
            .fields
            .iter()
            .filter(|f| f.ty == FieldType::JsonObjectString)
        {
            let _ = writeln!(
                out,
                "| `{}.<key>` | any scalar | no (missing = null) | a key of the object inside `{}` |",
                f.name, f.name
            );
        }
        let _ = writeln!(
            out,
            "| `{VERSION_FIELD}` | integer | no (absent = 1) | schema version |\n"
        );
    }
    out.push_str("`json`: any JSON object; only the fields the aggregations use are read, and a missing field is null.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_parse_by_name() {
        for schema in Schema::ALL {
            assert_eq!(Schema::parse(schema.name()), Some(schema));
        }
        assert_eq!(Schema::parse("orders"), None);
    }

    #[test]
    fn time_fields_are_declared_with_a_fitting_type() {
        for def in SEED_SCHEMAS {
            let (name, format) = def.time;
            assert!(def.field(name).unwrap().ty.fits(format), "{}", def.name);
        }
    }

    #[test]
    fn the_topology_docs_carry_the_schema_reference() {
        let docs = include_str!("../../docs/topology.md");
        assert!(
            docs.contains(&reference_markdown()),
            "docs/topology.md's schema section is out of date: paste the output of `eddy topology schemas`"
        );
    }
}
