//! The handlers: find the embedded asset, pick its representation (gzip or identity),
//! answer `304` to a matching `If-None-Match`, and set the caching and security headers.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// One embedded file.
pub(crate) struct Asset {
    /// Its path under `/assets/`.
    path: &'static str,
    content_type: &'static str,
    /// A hash of its content: `?v=` of the URLs that may be cached for good, and its `ETag`.
    version: &'static str,
    body: &'static [u8],
    /// The same bytes gzipped, when that makes them smaller.
    gzip: Option<&'static [u8]>,
}

/// How long a versioned asset may be cached: its URL changes with its content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache, but ask the server (with `If-None-Match`) before each use.
const REVALIDATE: &str = "no-cache";

/// `GET /`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    let mut response = respond(&INDEX, &headers, REVALIDATE);
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /assets/{*path}`: an asset, cacheable for good when asked for at its version.
pub(crate) async fn asset(Path(path): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(position) = ASSETS.binary_search_by(|asset| asset.path.cmp(path.as_str())) else {
        return not_found(&path);
    };
    let asset = &ASSETS[position];
    let is_versioned = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(asset.version));
    respond(
        asset,
        &headers,
        if is_versioned { IMMUTABLE } else { REVALIDATE },
    )
}

fn respond(asset: &Asset, request: &HeaderMap, cache_control: &'static str) -> Response {
    let gzip = asset.gzip.filter(|_| accepts_gzip(request));
    let etag = match gzip {
        Some(_) => format!("\"{}-gzip\"", asset.version),
        None => format!("\"{}\"", asset.version),
    };
    let is_fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if is_fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(gzip.unwrap_or(asset.body)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzip.is_some() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether `Accept-Encoding` allows gzip: listed (as `gzip` or `x-gzip`) with a
/// non-zero quality, or covered by `*` when not listed.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    let codings = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for coding in codings {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|parameter| {
                let (key, value) = parameter.split_once('=')?;
                (key.trim().eq_ignore_ascii_case("q")).then(|| value.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(quality > 0.0);
        } else if name == "*" {
            any = Some(quality > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// The API's error shape, so that every 404 of the server reads the same.
fn not_found(path: &str) -> Response {
    let detail = format!("no dashboard asset at /assets/{path}");
    let body = format!(
        "{{\"type\":\"urn:fleetwire:problem:not-found\",\"title\":\"Not found\",\"status\":404,\"detail\":{}}}",
        json_string(&detail)
    );
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::CACHE_CONTROL, REVALIDATE),
        ],
        body,
    )
        .into_response()
}

/// `text` as a JSON string literal (this crate has no JSON library, and needs one string).
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            character if u32::from(character) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn accept_encoding_is_read_like_rfc_9110() {
        for (header, expected) in [
            ("gzip", true),
            ("gzip, deflate, br, zstd", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("x-gzip", true),
            ("GZIP", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip;q=0.0, *", false),
            ("*;q=0", false),
            ("br", false),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(&encoding(header)), expected, "{header:?}");
        }
    }

    #[test]
    fn assets_are_sorted_for_binary_search() {
        assert!(ASSETS.windows(2).all(|pair| pair[0].path < pair[1].path));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
