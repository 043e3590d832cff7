//! The dashboard router as a browser meets it: the page, its versioned assets, caching,
//! gzip and errors, without a socket (`tower::ServiceExt::oneshot`).

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::io::Read;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> (Response<()>, Vec<u8>) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let app: Router = fleetwire_dashboard::router();
    let response = app
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

async fn get(uri: &str) -> (Response<()>, Vec<u8>) {
    request(Method::GET, uri, &[]).await
}

fn header(response: &Response<()>, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .map(|value| value.to_str().unwrap())
        .unwrap_or_default()
}

/// Every `/assets/...?v=...` URL the page refers to.
fn asset_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("/assets/") {
        let tail = &rest[start..];
        let end = tail.find(['"', '\'', ' ', '>']).unwrap_or(tail.len());
        let url = &tail[..end];
        if url.contains("?v=") && !urls.iter().any(|known| known == url) {
            urls.push(url.to_owned());
        }
        rest = &tail[end..];
    }
    urls
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

#[tokio::test]
async fn index_is_html_revalidated_and_locked_down() {
    let (response, body) = get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
    assert!(header(&response, header::ETAG).starts_with('"'));
    let policy = header(&response, header::CONTENT_SECURITY_POLICY);
    assert!(policy.contains("script-src 'self' 'sha256-"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let html = String::from_utf8(body).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("{{"), "a placeholder was left: {html}");
    assert!(html.contains(r#"<script type="importmap">"#));
}

#[tokio::test]
async fn every_asset_the_page_names_is_served_and_cacheable_for_good() {
    let (_, body) = get("/").await;
    let urls = asset_urls(&String::from_utf8(body).unwrap());
    assert!(urls.len() >= 8, "{urls:?}");
    for url in &urls {
        let (response, body) = get(url).await;
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert!(!body.is_empty(), "{url}");
        let content_type = header(&response, header::CONTENT_TYPE);
        let expected = match url.split('?').next().unwrap().rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset kind {other:?} in {url}"),
        };
        assert_eq!(content_type, expected, "{url}");
    }
}

#[tokio::test]
async fn modules_import_only_modules_the_import_map_versions() {
    let (_, body) = get("/").await;
    let html = String::from_utf8(body).unwrap();
    for url in asset_urls(&html) {
        if !url.contains(".js?") || url.contains("/vendor/") {
            continue;
        }
        let (_, body) = get(&url).await;
        let source = String::from_utf8(body).unwrap();
        for line in source.lines() {
            let Some(from) = line.split(" from '").nth(1) else {
                continue;
            };
            let specifier = from.split('\'').next().unwrap();
            let directory = url.split('?').next().unwrap().rsplit_once('/').unwrap().0;
            let mut resolved: Vec<&str> = directory.split('/').collect();
            for part in specifier.split('/') {
                match part {
                    "." => {}
                    ".." => {
                        resolved.pop();
                    }
                    part => resolved.push(part),
                }
            }
            let resolved = resolved.join("/");
            assert!(
                html.contains(&format!("\"{resolved}\": \"{resolved}?v=")),
                "{url} imports {specifier} ({resolved}), which the import map does not version"
            );
        }
    }
}

#[tokio::test]
async fn unversioned_or_stale_asset_urls_are_revalidated() {
    for uri in ["/assets/app.js", "/assets/app.js?v=000000000000"] {
        let (response, body) = get(uri).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            "no-cache",
            "{uri}"
        );
        assert!(!body.is_empty());
    }
}

#[tokio::test]
async fn gzip_is_sent_to_clients_that_accept_it() {
    let (plain_response, plain) = get("/assets/app.js").await;
    assert_eq!(header(&plain_response, header::CONTENT_ENCODING), "");
    assert_eq!(header(&plain_response, header::VARY), "accept-encoding");

    let (response, compressed) = request(
        Method::GET,
        "/assets/app.js",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
    assert_eq!(header(&response, header::VARY), "accept-encoding");
    assert!(compressed.len() < plain.len());
    assert_eq!(gunzip(&compressed), plain);
    assert_ne!(
        header(&response, header::ETAG),
        header(&plain_response, header::ETAG)
    );

    let (refused, body) = request(
        Method::GET,
        "/assets/app.js",
        &[("accept-encoding", "gzip;q=0")],
    )
    .await;
    assert_eq!(header(&refused, header::CONTENT_ENCODING), "");
    assert_eq!(body, plain);
}

#[tokio::test]
async fn a_matching_etag_gets_not_modified() {
    let (first, _) = request(Method::GET, "/", &[("accept-encoding", "gzip")]).await;
    let etag = header(&first, header::ETAG).to_owned();
    let (again, body) = request(
        Method::GET,
        "/",
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&again, header::ETAG), etag);

    // The identity representation has another tag: no 304 for it.
    let (other, body) = request(Method::GET, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert!(!body.is_empty());
}

#[tokio::test]
async fn head_answers_headers_without_a_body() {
    let (response, body) = request(Method::HEAD, "/assets/style.css", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        "text/css; charset=utf-8"
    );
    assert!(body.is_empty());
}

#[tokio::test]
async fn unknown_assets_are_problem_json_404s() {
    let (response, body) = get("/assets/nope.js").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        "application/problem+json"
    );
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text,
        r#"{"type":"urn:fleetwire:problem:not-found","title":"Not found","status":404,"detail":"no dashboard asset at /assets/nope.js"}"#
    );
}

#[tokio::test]
async fn the_vendored_chart_library_ships_with_its_licence() {
    let (response, body) = get("/assets/vendor/uplot/LICENSE").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().contains("The MIT License"));
}

#[test]
fn the_router_merges_into_a_router_with_state() {
    #[derive(Clone)]
    struct AppState;
    let _: Router<AppState> = Router::new().merge(fleetwire_dashboard::router());
}
