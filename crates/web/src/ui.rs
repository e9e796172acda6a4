//! The tablet app: the single-page app built from `ui/` into `ui/dist/`, embedded in the
//! binary, so the box serves it with no node, no internet and no files beside the
//! binary. Text assets are embedded gzipped and brotli-compressed too (built
//! reproducibly by `ui/build.mjs`) and served compressed to browsers that accept it,
//! brotli first (browsers ask for it over HTTPS only).
//!
//! Deep links to the app's screens (`/queue`, `/frames/12`, ...) get `index.html`; any
//! other path stays a JSON 404, so an API typo never looks like a page.
//!
//! Invariant: serves only what is compiled in; never reads the filesystem.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// One embedded file: its bytes, its gzip and brotli (for text), and its content type.
struct Asset {
    name: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
    brotli: Option<&'static [u8]>,
    content_type: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/dist/", $name)),
            gzip: None,
            brotli: None,
            content_type: $type,
        }
    };
    ($name:literal, $type:literal, gzip) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/dist/", $name)),
            gzip: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/dist/", $name, ".gz"))),
            brotli: Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/dist/", $name, ".br"))),
            content_type: $type,
        }
    };
}

/// Every file of `ui/dist/` (a test checks the two lists agree).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8", gzip),
    asset!("app.js", "text/javascript; charset=utf-8", gzip),
    asset!("app.css", "text/css; charset=utf-8", gzip),
    asset!("sw.js", "text/javascript; charset=utf-8", gzip),
    asset!("manifest.webmanifest", "application/manifest+json", gzip),
    asset!("icon.svg", "image/svg+xml", gzip),
    asset!("icon-192.png", "image/png"),
    asset!("icon-512.png", "image/png"),
    asset!("trust.html", "text/html; charset=utf-8", gzip),
    asset!("trust.js", "text/javascript; charset=utf-8", gzip),
];

/// The app's screens: a reload or a bookmark of any of them gets the app.
const SCREENS: &[&str] = &["login", "setup", "queue", "review", "labels", "consents", "live", "device", "users"];

/// Strong validators, so a tablet revalidates with a 304 instead of downloading again.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = ring::digest::digest(&ring::digest::SHA256, a.body);
            let hex: String = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

fn serve(name: &str, request: &HeaderMap) -> Option<Response> {
    let index = ASSETS.iter().position(|a| a.name == name)?;
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex in quotes"));
    // Revalidated on every use: a box upgrade shows at the next load, and 304s are cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    if name == "sw.js" {
        // The service worker controls the whole app, not only its own folder.
        headers.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    let body = match (asset.brotli, asset.gzip) {
        (Some(brotli), _) if accepts(request, "br") => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            brotli
        }
        (_, Some(gzip)) if accepts(request, "gzip") => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gzip
        }
        _ => asset.body,
    };
    Some((headers, body).into_response())
}

/// Whether `Accept-Encoding` names `coding` without refusing it (`;q=0`).
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    request.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |e| {
            let mut parts = e.split(';').map(str::trim);
            parts.next() == Some(coding) && !parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse() == Ok(0.0)))
        },
    )
}

fn index_html(request: &HeaderMap) -> Response {
    serve("index.html", request).expect("index.html is embedded")
}

/// The tablet app.
#[utoipa::path(get, path = "/", tag = "ui", responses((status = 200, content_type = "text/html", body = String)))]
pub(crate) async fn index(request: HeaderMap) -> Response {
    index_html(&request)
}

/// One of the app's files (script, styles, manifest, icons, service worker), the app
/// itself for a deep link to one of its screens, or the "Trust this box" page (`/trust`).
#[utoipa::path(get, path = "/{file}", tag = "ui", params(("file" = String, Path)),
    responses((status = 200, body = Vec<u8>), (status = 304), (status = 404, body = ApiError)))]
pub(crate) async fn file(Path(file): Path<String>, request: HeaderMap) -> Result<Response, ApiError> {
    if SCREENS.contains(&file.as_str()) {
        return Ok(index_html(&request));
    }
    // "Trust this box": a page of its own, outside the app, so the app's first load
    // does not carry it.
    if file == "trust" {
        return Ok(serve("trust.html", &request).expect("trust.html is embedded"));
    }
    serve(&file, &request).ok_or_else(|| ApiError::not_found(format!("no such page or file: /{file}")))
}

/// A deep link to one frame in the annotation canvas: the app.
#[utoipa::path(get, path = "/frames/{id}", tag = "ui", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String)))]
pub(crate) async fn frame(request: HeaderMap) -> Response {
    index_html(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_file_is_embedded_and_every_text_file_has_its_gzip_and_brotli() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist");
        let mut built: Vec<String> = std::fs::read_dir(&dist)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".gz") && !n.ends_with(".br"))
            .collect();
        built.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(built, embedded, "ui/dist and ui.rs's ASSETS must list the same files");
        for a in ASSETS {
            let gz = dist.join(format!("{}.gz", a.name)).exists();
            assert_eq!(gz, a.gzip.is_some(), "{}: gzip embedded iff ui/dist has it", a.name);
            let br = dist.join(format!("{}.br", a.name)).exists();
            assert_eq!(br, a.brotli.is_some(), "{}: brotli embedded iff ui/dist has it", a.name);
        }
    }

    #[test]
    fn brotli_or_gzip_is_served_only_when_accepted_and_etags_revalidate() {
        let mut request = HeaderMap::new();
        let plain = serve("app.js", &request).unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let app = ASSETS.iter().find(|a| a.name == "app.js").unwrap();
        assert!(app.brotli.unwrap().len() < app.gzip.unwrap().len(), "brotli is the smaller");
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("deflate, gzip;q=1.0, br"));
        assert_eq!(serve("app.js", &request).unwrap().headers()[header::CONTENT_ENCODING], "br");
        // Brotli refused, or not offered (plain HTTP): gzip.
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br;q=0"));
        assert_eq!(serve("app.js", &request).unwrap().headers()[header::CONTENT_ENCODING], "gzip");
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate"));
        let gzipped = serve("app.js", &request).unwrap();
        assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
        let etag = gzipped.headers()[header::ETAG].clone();
        request.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &request).unwrap().status(), StatusCode::NOT_MODIFIED);
        assert!(serve("../Cargo.toml", &request).is_none());
    }
}
