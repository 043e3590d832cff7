//! Fleetwire's web dashboard: one HTML page, ES modules, a stylesheet and the vendored
//! uPlot chart library, embedded in the binary at build time and served by an axum
//! router. The page talks to the REST API (`/api/v1`) and the live stream
//! (`/api/v1/stream`) with the API token the user pastes in; this crate serves files
//! and nothing else: it knows no JSON, no API and no state.
//!
//! - `GET /`: the page (`Cache-Control: no-cache`, an `ETag`, a Content-Security-Policy
//!   that allows only this server's scripts).
//! - `GET /assets/PATH`: modules, stylesheets, vendored files. The page refers to them
//!   as `/assets/PATH?v=VERSION`, where the version is a hash of the content: such a
//!   request is cacheable for a year (`immutable`); any other is `no-cache`.
//!
//! Every text asset also exists gzipped (compressed by `build.rs`), sent to clients
//! whose `Accept-Encoding` allows it, with `Vary: Accept-Encoding`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! // Alone, or merged with the API: `fleetwire_api::router(state).merge(fleetwire_dashboard::router())`.
//! let app: axum::Router = fleetwire_dashboard::router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod serve;

use axum::Router;
use axum::routing::get;

/// The dashboard's routes: `/` and `/assets/{*path}`.
///
/// Generic over the state so it merges into a router of any state; it uses none.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(serve::index))
        .route("/assets/{*path}", get(serve::asset))
}
