//! Fleetwire's HTTP front-end. For now: liveness (`/healthz`), readiness (`/readyz`)
//! and Prometheus metrics (`/metrics`); the REST API grows here.
//!
//! Only this crate knows HTTP; it reads the domain crates through their public APIs.
//!
//! ```no_run
//! # async fn run(broker: fleetwire_broker::Broker) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, fleetwire_api::router(broker)).await
//! # }
//! ```

mod metrics;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fleetwire_broker::Broker;

/// The HTTP routes, over a running broker.
pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(broker)
}

/// The process is alive and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The broker accepts connections (it stops being ready once shutdown begins).
async fn readyz(State(broker): State<Broker>) -> impl IntoResponse {
    if broker.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(broker): State<Broker>) -> impl IntoResponse {
    let body = metrics::render(&broker);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use fleetwire_broker::BrokerConfig;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get_text(broker: &Broker, path: &str) -> (StatusCode, String) {
        let response = router(broker.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_and_readiness_follow_the_broker() {
        let broker = Broker::new(BrokerConfig::default());
        assert_eq!(get_text(&broker, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get_text(&broker, "/readyz").await.0, StatusCode::OK);
        broker.shutdown();
        assert_eq!(
            get_text(&broker, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get_text(&broker, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_broker_counters() {
        let broker = Broker::new(BrokerConfig::default());
        let (status, body) = get_text(&broker, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("# TYPE fleetwire_mqtt_messages_received_total counter"),
            "{body}"
        );
        assert!(
            body.contains("\nfleetwire_mqtt_clients_connected 0\n"),
            "{body}"
        );
    }
}
