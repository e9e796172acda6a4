//! The hub's API for people, under `/api/v1`: the fleet view, the decisions on devices,
//! erasure, enrolment tokens, and the accounts themselves. Logins, sessions, roles,
//! CSRF, rate limits and the first-run setup code are the box's own (`crate::auth`, over
//! the hub's `store::Accounts`), so a hub has no default password either.
//!
//! Who may do what, as on a box: any account reads the fleet; admins decide on devices,
//! send them commands, make tokens and manage accounts; stewards erase (the hub's copy at
//! once, the device's by command, each with its receipt).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hub::{DeviceRecord, Hub, HubError, Kind};
use serde::{Deserialize, Serialize};
use wire::DeviceId;
use wire::mqtt::Telemetry;
use wire::v1::{Command, CommandAck, CommandKind, DeviceState, EraseWindow};

use super::{HubState, Refused, blocking, now_ms};
use crate::auth::Authed;

/// A device as the fleet view shows it.
#[derive(Debug, Serialize)]
pub struct FleetDevice {
    pub id: DeviceId,
    pub state: &'static str,
    pub hostname: String,
    /// Its key's fingerprint, as the box shows it (`obscura sync status`, doctor, the UI).
    pub key: String,
    pub enrolled_ms: i64,
    /// Frames of it the hub holds.
    pub frames: usize,
    /// What the control plane last heard; absent when never on the broker.
    pub presence: Option<FleetPresence>,
    /// Commands it has not acknowledged yet.
    pub pending_commands: Vec<Command>,
}

#[derive(Debug, Serialize)]
pub struct FleetPresence {
    pub online: bool,
    pub changed_ms: i64,
    pub telemetry: Option<Telemetry>,
    pub telemetry_ms: Option<i64>,
}

fn fleet_device(hub: &Hub, d: DeviceRecord) -> Result<FleetDevice, HubError> {
    let store = hub.store();
    let presence = store.presence(d.id)?.map(|p| FleetPresence {
        online: p.online,
        changed_ms: p.changed_ms,
        telemetry_ms: p.telemetry.as_ref().map(|(_, at)| *at),
        telemetry: p.telemetry.map(|(t, _)| t),
    });
    Ok(FleetDevice {
        id: d.id,
        state: d.state.as_str(),
        hostname: d.hostname,
        key: wire::keyfile::public_fingerprint(&d.public_key),
        enrolled_ms: d.enrolled_ms,
        frames: store.frame_count(d.id)? as usize,
        presence,
        pending_commands: store.commands(d.id)?,
    })
}

fn not_found(id: DeviceId) -> HubError {
    HubError::new(
        Kind::NotFound,
        "not_found",
        format!("no device {id} has enrolled; GET /api/v1/devices lists those that have"),
    )
}

/// `GET /api/v1/devices`: every device that enrolled, with its presence and backlog.
pub(super) async fn devices(State(state): State<HubState>) -> Result<Json<Vec<FleetDevice>>, Refused> {
    let list = blocking(&state, |hub| {
        hub.store().devices()?.into_iter().map(|d| fleet_device(hub, d)).collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(list))
}

/// `GET /api/v1/devices/{id}`.
pub(super) async fn device(
    State(state): State<HubState>,
    Path(id): Path<DeviceId>,
) -> Result<Json<FleetDevice>, Refused> {
    let device = blocking(&state, move |hub| {
        let record = hub.store().device(id)?.ok_or_else(|| not_found(id))?;
        fleet_device(hub, record)
    })
    .await?;
    Ok(Json(device))
}

/// `POST /api/v1/devices/{id}/approve|revoke`.
async fn decide(
    state: HubState,
    id: DeviceId,
    decision: DeviceState,
    me: Authed,
) -> Result<Json<FleetDevice>, Refused> {
    let device = blocking(&state, move |hub| {
        hub.decide(id, decision, &me.user.name, now_ms())?;
        let record = hub.store().device(id)?.ok_or_else(|| not_found(id))?;
        fleet_device(hub, record)
    })
    .await?;
    Ok(Json(device))
}

pub(super) async fn approve(
    State(state): State<HubState>,
    Path(id): Path<DeviceId>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<Json<FleetDevice>, Refused> {
    decide(state, id, DeviceState::Approved, me).await
}

pub(super) async fn revoke(
    State(state): State<HubState>,
    Path(id): Path<DeviceId>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<Json<FleetDevice>, Refused> {
    decide(state, id, DeviceState::Revoked, me).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCommand {
    /// sync_now, pause or resume (erasure has its own route, for stewards).
    kind: String,
}

/// `POST /api/v1/devices/{id}/commands`: kept, published on the broker, and polled.
pub(super) async fn command(
    State(state): State<HubState>,
    Path(id): Path<DeviceId>,
    axum::Extension(me): axum::Extension<Authed>,
    crate::Body(body): crate::Body<NewCommand>,
) -> Result<(StatusCode, Json<Command>), Refused> {
    let kind = match CommandKind::parse(&body.kind) {
        Some(kind @ (CommandKind::SyncNow | CommandKind::Pause | CommandKind::Resume)) => kind,
        _ => {
            return Err(Refused(HubError::new(
                Kind::Unprocessable,
                "invalid",
                format!(
                    "`{}` is not a command here: use sync_now, pause or resume (erase with POST /api/v1/erasures)",
                    body.kind.chars().take(40).collect::<String>()
                ),
            )));
        }
    };
    let command = blocking(&state, move |hub| hub.command(id, kind, Vec::new(), &me.user.name, now_ms())).await?;
    Ok((StatusCode::CREATED, Json(command)))
}

/// A command and the device's answer, if any.
#[derive(Debug, Serialize)]
pub struct CommandState {
    pub id: String,
    pub ack: Option<CommandAck>,
}

/// `GET /api/v1/devices/{id}/commands/{command}`: the device's answer, with its
/// receipt for an erasure.
pub(super) async fn command_state(
    State(state): State<HubState>,
    Path((id, command)): Path<(DeviceId, String)>,
) -> Result<Json<CommandState>, Refused> {
    let ack = blocking(&state, move |hub| {
        hub.store().device(id)?.ok_or_else(|| not_found(id))?;
        Ok(hub.store().command_ack(id, &command)?.map(|ack| (command, ack)))
    })
    .await?;
    match ack {
        Some((id, ack)) => Ok(Json(CommandState { id, ack: Some(ack) })),
        None => Err(Refused(HubError::new(
            Kind::NotFound,
            "not_answered",
            "the device has not answered that command (or there is no such command); it will when next online",
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewErasure {
    device: DeviceId,
    /// Frames by the device's ids.
    #[serde(default)]
    frames: Vec<i64>,
    camera: Option<String>,
    from_ms: Option<i64>,
    until_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ErasureDone {
    /// Frames the hub held of those named, now gone.
    pub erased: usize,
    /// The hub's signed erasure receipt.
    pub receipt: serde_json::Value,
    /// The command the device erases by; `GET /api/v1/devices/{id}/commands/{command}`
    /// gives its receipt once it answers.
    pub command: Command,
    /// The device's state: one not approved gets the command once it is.
    pub device_state: &'static str,
}

/// `POST /api/v1/erasures`: the hub's copy goes at once, the device's by command.
pub(super) async fn erase(
    State(state): State<HubState>,
    axum::Extension(me): axum::Extension<Authed>,
    crate::Body(body): crate::Body<NewErasure>,
) -> Result<(StatusCode, Json<ErasureDone>), Refused> {
    let window = (body.camera.is_some() || body.from_ms.is_some() || body.until_ms.is_some()).then(|| EraseWindow {
        camera: body.camera.clone(),
        from_ms: body.from_ms,
        until_ms: body.until_ms,
    });
    let done =
        blocking(&state, move |hub| hub.erase_selected(body.device, body.frames, window, &me.user.name, now_ms()))
            .await?;
    let receipt = serde_json::from_str(&done.receipt).unwrap_or(serde_json::Value::String(done.receipt));
    Ok((
        StatusCode::CREATED,
        Json(ErasureDone {
            erased: done.erased,
            receipt,
            command: done.command,
            device_state: done.device_state.as_str(),
        }),
    ))
}

#[derive(Debug, Serialize)]
pub struct Token {
    /// Give it to `obscura sync enrol --token`: the device that enrols with it is
    /// approved at once. Shown once; the hub keeps only its hash.
    pub token: String,
}

/// `POST /api/v1/tokens`: a one-time enrolment token.
pub(super) async fn token(
    State(state): State<HubState>,
    axum::Extension(me): axum::Extension<Authed>,
) -> Result<(StatusCode, Json<Token>), Refused> {
    let token = blocking(&state, move |hub| hub.new_token(&me.user.name, now_ms())).await?;
    Ok((StatusCode::CREATED, Json(Token { token })))
}
