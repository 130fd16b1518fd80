//! The OpenAPI 3 document served at `/api/v1/openapi.json`.

use serde_json::{json, Value};

/// The API's OpenAPI document, listing the aggregations this instance answers for.
pub fn openapi_document(aggregations: &[String]) -> Value {
    let time = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "required": true, "description": what,
               "schema": {"type": "string", "format": "date-time"}})
    };
    let error = json!({"description": "A bad request: the `parameter` names what to fix",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let period = json!({"type": "object", "properties": {
        "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"}}});
    let closed_until = json!({"type": "string", "format": "date-time", "nullable": true,
        "description": "every output partition has made the windows ending at or before this final"});
    let complete = json!({"type": "boolean",
        "description": "every window of `covered` is final on every output partition and still held (starts at or after `retained_from`)"});
    let retained_from = json!({"type": "string", "format": "date-time", "nullable": true,
        "description": "the index is bounded: it holds the windows starting at or after this; null while it holds every window read"});
    let index = json!({"type": "object", "description": "the reader of the output topics", "properties": {
        "degraded": {"type": "boolean", "description": "its last read failed and none has succeeded since: the answer may be stale"},
        "error": {"type": "string", "nullable": true},
        "skipped_records": {"type": "integer", "description": "records it could not index, missing from answers"}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "eddy query API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Range answers merged from eddy's committed output windows. A window counts when it lies entirely inside [from, to); `covered` says which range that is."},
        "paths": {
            "/api/v1/metrics": {"get": {
                "summary": "Event counts by event type and unique users over a range (seed 002's GetMetrics)",
                "parameters": [time("from", "start of the range, inclusive (RFC 3339)"), time("to", "end of the range, exclusive (RFC 3339)"),
                    {"name": "eventType", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The merged answer",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "users": {"type": "integer", "description": "unique users over all event types (HLL estimate)"},
                        "users_error": {"type": "integer", "description": "±3 relative standard errors: 99.7% of estimates are within it"},
                        "users_relative_standard_error": {"type": "number"},
                        "users_sketch": {"type": "string", "description": "base64 DataSketches HLL_8 sketch, mergeable"},
                        "event_type_users": {"type": "integer", "description": "with eventType: that type's unique users"},
                        "period": period.clone(), "covered": period.clone(),
                        "closed_until": closed_until.clone(), "complete": complete.clone(),
                        "retained_from": retained_from.clone(), "index": index.clone()}}}}},
                    "400": error.clone(), "404": {"description": "No aggregation of this topology answers it"}}}},
            "/api/v1/aggregations/{name}": {"get": {
                "summary": "Any aggregation merged over a range, per group and in total",
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "enum": aggregations}},
                    time("from", "start of the range, inclusive (RFC 3339)"), time("to", "end of the range, exclusive (RFC 3339)")],
                "description": "Further query parameters named after the aggregation's group_by fields keep only matching groups.",
                "responses": {"200": {"description": "Per-group and total values and sketches",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "aggregation": {"type": "string"}, "period": period.clone(), "covered": period,
                        "groups": {"type": "array", "items": {"type": "object"}}, "total": {"type": "object"},
                        "closed_until": closed_until, "complete": complete,
                        "retained_from": retained_from, "index": index}}}}},
                    "400": error}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
        },
        "components": {"schemas": {"Error": {"type": "object", "properties": {
            "error": {"type": "string"}, "parameter": {"type": "string", "nullable": true}}}}}
    })
}
