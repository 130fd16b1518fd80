//! The HTTP listener (axum on hyper): `/metrics` (Prometheus text), `/health/live`,
//! `/health/ready`, and the query API under `/api/v1/` when one is given.

use super::Health;
use crate::api::{openapi_document, ApiError, ApiState};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A request that takes longer than this is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Shared {
    metrics: Option<PrometheusHandle>,
    health: Health,
    api: Option<ApiState>,
}

/// Binds `addr` and serves on a thread of its own until the process exits. Returns the bound
/// address (port 0 picks one).
pub fn serve_http(
    addr: &str,
    metrics: Option<PrometheusHandle>,
    health: Health,
    api: Option<ApiState>,
) -> Result<SocketAddr, crate::Error> {
    let error = |e: std::io::Error| crate::Error::Http {
        addr: addr.into(),
        reason: e.to_string(),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    let app = router(Shared {
        metrics,
        health,
        api,
    });
    std::thread::Builder::new()
        .name("eddy-http".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                // axum::serve backs off on accept errors (e.g. out of file descriptors).
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(%error, "the HTTP listener stopped");
                }
            });
        })
        .map_err(error)?;
    Ok(local)
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/health/live", get(|| async { Json(serde_json::json!({"live": true})) }))
        .route("/health/ready", get(ready))
        .route("/api/v1/metrics", get(api_metrics))
        .route("/api/v1/aggregations/{name}", get(api_aggregation))
        .route("/api/v1/openapi.json", get(api_openapi))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "eddy serves /metrics, /health/live, /health/ready and /api/v1/ (see /api/v1/openapi.json)\n",
            )
        })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(shared)
}

async fn prometheus(State(shared): State<Shared>) -> Response {
    match &shared.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not recorded here\n").into_response(),
    }
}

async fn ready(State(shared): State<Shared>) -> Response {
    let status = if shared.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        shared.health.describe(),
    )
        .into_response()
}

fn answer(result: Result<serde_json::Value, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => (
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(error.body()),
        )
            .into_response(),
    }
}

fn no_api() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "this process serves no query API"})),
    )
        .into_response()
}

/// Query strings are read leniently (any keys) so unknown ones get a 400 naming them.
async fn api_metrics(
    State(shared): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(api) = shared.api else {
        return no_api();
    };
    // Merging can take milliseconds: keep it off the accept loop's thread.
    answer(
        tokio::task::spawn_blocking(move || api.metrics(&params))
            .await
            .unwrap_or_else(|e| Err(internal(e))),
    )
}

async fn api_aggregation(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(api) = shared.api else {
        return no_api();
    };
    answer(
        tokio::task::spawn_blocking(move || api.aggregation(&name, &params))
            .await
            .unwrap_or_else(|e| Err(internal(e))),
    )
}

async fn api_openapi(State(shared): State<Shared>) -> Response {
    let names: Vec<String> = match &shared.api {
        Some(api) => api
            .index
            .lock()
            .expect("index lock")
            .aggregation_names()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    Json(openapi_document(&names)).into_response()
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: 500,
        parameter: None,
        message: format!("internal error: {error}"),
    }
}
