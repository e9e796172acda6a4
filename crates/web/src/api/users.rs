//! Accounts, for admins. Passwords are hashed here (Argon2id) and never logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use store::{Role, User};
use utoipa::ToSchema;

use crate::auth::{Authed, Gate, check_name, hash_password};
use crate::{ApiError, Body};

fn weak(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", message)
}

/// Every account.
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn list(State(state): State<Gate>) -> Result<Json<Vec<User>>, ApiError> {
    state.run(|store| Ok(Json(store.users()?))).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewUser {
    name: String,
    /// admin, annotator, reviewer or steward.
    role: String,
    password: String,
}

/// Add an account.
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = Object), (status = 422, body = ApiError)))]
pub(crate) async fn add(
    State(state): State<Gate>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(u): Body<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    check_name(&u.name).map_err(invalid)?;
    let role: Role = u.role.parse().map_err(invalid)?;
    state
        .run(move |store| {
            let hash = hash_password(&u.password).map_err(weak)?;
            Ok((StatusCode::CREATED, Json(store.add_user(&u.name, role, &hash, &me.user.name)?)))
        })
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UserChange {
    role: Option<String>,
    disabled: Option<bool>,
}

/// Change an account's role, or disable it; its sessions end either way.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserChange,
    responses((status = 200, body = Object), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn update(
    State(state): State<Gate>,
    Path(id): Path<i64>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(c): Body<UserChange>,
) -> Result<Json<User>, ApiError> {
    let role = c
        .role
        .map(|r| r.parse::<Role>())
        .transpose()
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m))?;
    state.run(move |store| Ok(Json(store.update_user(id, role, c.disabled, &me.user.name)?))).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewPassword {
    password: String,
}

/// Set an account's password (its sessions end).
#[utoipa::path(post, path = "/users/{id}/password", tag = "users", params(("id" = i64, Path)), request_body = NewPassword,
    responses((status = 204), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub(crate) async fn reset_password(
    State(state): State<Gate>,
    Path(id): Path<i64>,
    axum::Extension(me): axum::Extension<Authed>,
    Body(p): Body<NewPassword>,
) -> Result<StatusCode, ApiError> {
    state
        .run(move |store| {
            let hash = hash_password(&p.password).map_err(weak)?;
            store.set_password(id, &hash, &me.user.name)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}
