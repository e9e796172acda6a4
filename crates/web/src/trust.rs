//! "Trust this box": the box's root certificate for tablets to install, as DER (`.crt`,
//! what Android's installer and desktop browsers take), as PEM, and inside an iOS and
//! iPadOS configuration profile (`.mobileconfig`), with its fingerprint to check. Public
//! and read-only: a tablet needs them before anyone can log in, and a root certificate
//! is no secret (its key never leaves the box).
//!
//! Invariant: only the root is served, never a key; with the operator's certificate or
//! plain HTTP there is no root of the box's own, and every route says so (404).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::tls::RootCa;
use crate::{ApiError, AppState};

/// The box's root certificate, what it is and where to get it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trust {
    /// Its name, as the tablet shows it once installed.
    pub name: String,
    /// Its SHA-256 fingerprint (`AA:BB:…`): the box prints it at every start.
    pub fingerprint: String,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The downloads: DER, PEM and the iOS profile.
    pub crt: &'static str,
    pub pem: &'static str,
    pub mobileconfig: &'static str,
}

fn root(state: &AppState) -> Result<&RootCa, ApiError> {
    state.config.root_ca.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "this box has no root certificate of its own: it serves the operator's certificate ([http] tls_cert), \
             which the operator's own CA vouches for, or plain HTTP",
        )
    })
}

/// A download: `body` as `content_type`, saved as `name`.
fn download(content_type: &'static str, name: &'static str, body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")).expect("an ASCII name"),
    );
    response
}

/// The box's root certificate: its name, fingerprint, end and downloads.
#[utoipa::path(get, path = "/trust", tag = "trust",
    responses((status = 200, body = Trust), (status = 404, body = ApiError)))]
pub(crate) async fn info(State(state): State<AppState>) -> Result<Json<Trust>, ApiError> {
    let root = root(&state)?;
    Ok(Json(Trust {
        name: root.name(),
        fingerprint: root.fingerprint(),
        not_after: root.info().not_after,
        crt: "/api/v1/trust/obscura-root.crt",
        pem: "/api/v1/trust/obscura-root.pem",
        mobileconfig: "/api/v1/trust/obscura.mobileconfig",
    }))
}

/// The root as DER: Android (Settings › Security › Encryption & credentials › Install a
/// certificate › CA certificate) and desktop browsers install it.
#[utoipa::path(get, path = "/trust/obscura-root.crt", tag = "trust",
    responses((status = 200, content_type = "application/x-x509-ca-cert", body = Vec<u8>), (status = 404, body = ApiError)))]
pub(crate) async fn crt(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(download("application/x-x509-ca-cert", "obscura-root.crt", root(&state)?.der().to_vec()))
}

/// The root as PEM.
#[utoipa::path(get, path = "/trust/obscura-root.pem", tag = "trust",
    responses((status = 200, content_type = "application/x-pem-file", body = String), (status = 404, body = ApiError)))]
pub(crate) async fn pem(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(download("application/x-pem-file", "obscura-root.pem", root(&state)?.pem().as_bytes().to_vec()))
}

/// An iOS and iPadOS configuration profile holding the root (unsigned). Once installed,
/// Settings › General › About › Certificate Trust Settings turns on trust for it.
#[utoipa::path(get, path = "/trust/obscura.mobileconfig", tag = "trust",
    responses((status = 200, content_type = "application/x-apple-aspen-config", body = String), (status = 404, body = ApiError)))]
pub(crate) async fn mobileconfig(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(download("application/x-apple-aspen-config", "obscura.mobileconfig", root(&state)?.mobileconfig().into_bytes()))
}
