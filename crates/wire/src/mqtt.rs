//! Version 1 of the control plane: the MQTT topics under `obscura/v1/<device>/` and what
//! their payloads say. The device (`sync::mqtt`) and the hub (`hub::broker`, and the
//! broker's ACLs it provisions) build and read topic names only through [`Topic`], so
//! a box and its hub cannot disagree about where a command or an ack goes.
//!
//! Nothing here is data that must not be lost: a command is also queued on the hub for
//! HTTPS polling, a receipt is the answer to an HTTPS commit, and a batch notice only
//! says that a batch is on its way. MQTT makes them quick, not durable.

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// Every topic starts with this, then the device id.
pub const PREFIX: &str = "obscura/v1";

/// The hub's fleet view: every device's status.
pub const FLEET_STATUS: &str = "obscura/v1/+/status";
/// The hub's fleet view: every device's telemetry.
pub const FLEET_TELEMETRY: &str = "obscura/v1/+/telemetry";
/// Every device's acks, receipts and batch notices, for the hub.
pub const FLEET_ACKS: &str = "obscura/v1/+/acks/+";
pub const FLEET_RECEIPTS: &str = "obscura/v1/+/receipts/+";
pub const FLEET_BATCHES: &str = "obscura/v1/+/batches/+";

/// Where a broker listens, from `mqtt://HOST[:PORT]` (plain, for loopback: 1883 by
/// default) or `mqtts://HOST[:PORT]` (TLS: 8883).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BrokerAddr {
    type Err = String;
    fn from_str(url: &str) -> Result<BrokerAddr, String> {
        let bad = |why: &str| {
            format!(
                "`{url}` is not a broker address: {why} (write mqtts://HOST:8883, or mqtt://127.0.0.1:1883 on loopback)"
            )
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("it must start with mqtts:// or mqtt://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '[']) {
            return Err(bad("only a host name or IPv4 address and a port may follow the scheme"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        Ok(BrokerAddr { tls, host: host.to_owned(), port })
    }
}

impl BrokerAddr {
    /// On this machine: the only place plain `mqtt://` (a password in clear) may go.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

/// One topic under a device's prefix. Ids (a command's, a batch's) are one topic level:
/// not empty, and without `/`, `+`, `#` or NUL ([`Topic::is_valid_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Retained; a [`Status`]. The device's last will sets it `offline`.
    Status,
    /// A [`Telemetry`], every minute while connected.
    Telemetry,
    /// A notice that the batch is ready to send (a [`BatchNotice`]); the batch itself goes over HTTPS.
    Batch(String),
    /// Hub → device: a `v1::Command` whose `id` is this one.
    Command(String),
    /// Device → hub: the `v1::CommandAck` of the command with this id.
    Ack(String),
    /// Device → hub: the hub's receipt for this batch or request, echoed (a `wire::Receipt`).
    Receipt(String),
}

impl Topic {
    /// Whether `id` can be one topic level.
    pub fn is_valid_id(id: &str) -> bool {
        !id.is_empty() && !id.contains(['/', '+', '#', '\0'])
    }

    /// The full topic name for `device`. An id that is not [`Topic::is_valid_id`] would
    /// make a name [`Topic::parse`] refuses: callers check ids they did not make.
    pub fn name(&self, device: DeviceId) -> String {
        let base = format!("{PREFIX}/{device}");
        match self {
            Topic::Status => format!("{base}/status"),
            Topic::Telemetry => format!("{base}/telemetry"),
            Topic::Batch(id) => format!("{base}/batches/{id}"),
            Topic::Command(id) => format!("{base}/commands/{id}"),
            Topic::Ack(id) => format!("{base}/acks/{id}"),
            Topic::Receipt(id) => format!("{base}/receipts/{id}"),
        }
    }

    /// The device and topic `name` is, or None when it is not one of ours.
    pub fn parse(name: &str) -> Option<(DeviceId, Topic)> {
        let rest = name.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let mut levels = rest.split('/');
        let device: DeviceId = levels.next()?.parse().ok()?;
        let kind = levels.next()?;
        let id = levels.next();
        if levels.next().is_some() {
            return None;
        }
        let with_id = |make: fn(String) -> Topic| id.filter(|id| Topic::is_valid_id(id)).map(|id| make(id.to_owned()));
        let topic = match (kind, id) {
            ("status", None) => Topic::Status,
            ("telemetry", None) => Topic::Telemetry,
            ("batches", _) => with_id(Topic::Batch)?,
            ("commands", _) => with_id(Topic::Command)?,
            ("acks", _) => with_id(Topic::Ack)?,
            ("receipts", _) => with_id(Topic::Receipt)?,
            _ => return None,
        };
        Some((device, topic))
    }
}

/// What a device subscribes to: its own commands.
pub fn commands_filter(device: DeviceId) -> String {
    format!("{PREFIX}/{device}/commands/+")
}

/// Whether a device is connected, as the retained `status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

/// The retained `status`. `offline` is the last will (the broker publishes it when the
/// connection dies without a goodbye) and what a device says when it shuts down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: Presence,
    /// When the device said so (Unix ms); absent from the last will, which the broker
    /// sends long after it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

impl Status {
    pub fn online(at_ms: i64) -> Status {
        Status { state: Presence::Online, at_ms: Some(at_ms) }
    }

    /// The last will's payload, and the goodbye's (with a time).
    pub fn offline(at_ms: Option<i64>) -> Status {
        Status { state: Presence::Offline, at_ms }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status serialises")
    }
}

/// One camera in [`Telemetry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraTelemetry {
    pub id: String,
    /// Frames a second measured over the last interval.
    pub fps: f64,
}

/// What a device says every `telemetry_every` (60 s by default) on `telemetry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Frames waiting to sync, and their bytes.
    pub backlog_frames: u64,
    pub backlog_bytes: u64,
    /// Age of the oldest frame waiting, in seconds; absent when none waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age_s: Option<u64>,
    /// Seconds since the last receipt from the hub; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_receipt_age_s: Option<u64>,
    #[serde(default)]
    pub cameras: Vec<CameraTelemetry>,
    pub rss_bytes: u64,
    pub disk_free_bytes: u64,
    /// The SoC's temperature, where the box can read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f32>,
    pub sent_at_ms: i64,
}

/// `batches/<id>`: a batch is ready and will come over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchNotice {
    pub frames: u64,
    pub bytes: u64,
    pub created_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        "01HZY3V8Q0M5W6ZJ7KX2C9D4FB".parse().unwrap()
    }

    #[test]
    fn every_topic_parses_back_to_itself() {
        let topics = [
            Topic::Status,
            Topic::Telemetry,
            Topic::Batch("b1".into()),
            Topic::Command("01HZY3V8Q0M5W6ZJ7KX2C9D4FC".into()),
            Topic::Ack("k".into()),
            Topic::Receipt("r-9".into()),
        ];
        for topic in topics {
            let name = topic.name(device());
            assert!(name.starts_with("obscura/v1/01HZY3V8Q0M5W6ZJ7KX2C9D4FB/"), "{name}");
            assert_eq!(Topic::parse(&name), Some((device(), topic)), "{name}");
        }
        assert_eq!(Topic::Command("7".into()).name(device()), "obscura/v1/01HZY3V8Q0M5W6ZJ7KX2C9D4FB/commands/7");
        assert_eq!(commands_filter(device()), "obscura/v1/01HZY3V8Q0M5W6ZJ7KX2C9D4FB/commands/+");
    }

    #[test]
    fn names_that_are_not_ours_do_not_parse() {
        let d = device();
        for name in [
            "obscura/v2/01HZY3V8Q0M5W6ZJ7KX2C9D4FB/status".to_owned(),
            "obscura/v1/not-a-ulid/status".to_owned(),
            format!("obscura/v1/{d}/status/extra"),
            format!("obscura/v1/{d}/commands"),
            format!("obscura/v1/{d}/commands/"),
            format!("obscura/v1/{d}/commands/a/b"),
            format!("obscura/v1/{d}/commands/+"),
            format!("obscura/v1/{d}/telemetry/x"),
            format!("obscura/v1/{d}/secrets"),
            format!("obscura/v1/{d}"),
            "obscura/v1".to_owned(),
            format!("xobscura/v1/{d}/status"),
        ] {
            assert_eq!(Topic::parse(&name), None, "{name}");
        }
        assert!(!Topic::is_valid_id("a/b") && !Topic::is_valid_id("#") && !Topic::is_valid_id(""));
    }

    #[test]
    fn broker_addresses_parse_with_default_ports_and_say_what_is_wrong() {
        let addr: BrokerAddr = "mqtts://hub.example".parse().unwrap();
        assert_eq!(addr, BrokerAddr { tls: true, host: "hub.example".into(), port: 8883 });
        let addr: BrokerAddr = "mqtt://127.0.0.1:18830/".parse().unwrap();
        assert_eq!((addr.tls, addr.host.as_str(), addr.port), (false, "127.0.0.1", 18830));
        assert_eq!(addr.to_string(), "mqtt://127.0.0.1:18830");
        assert_eq!("mqtt://h".parse::<BrokerAddr>().unwrap().port, 1883);
        for (url, why) in [
            ("https://hub:8883", "mqtts://"),
            ("mqtts://hub:x", "port"),
            ("mqtts://hub:0", "port"),
            ("mqtts://:8883", "host"),
            ("mqtts://user@hub", "only a host"),
            ("mqtts://hub/path", "only a host"),
        ] {
            let err = url.parse::<BrokerAddr>().unwrap_err();
            assert!(err.contains(why) && err.contains(url), "{url}: {err}");
        }
    }

    #[test]
    fn payloads_are_the_contract() {
        assert_eq!(
            serde_json::to_value(Status::online(5)).unwrap(),
            serde_json::json!({"state": "online", "at_ms": 5})
        );
        assert_eq!(String::from_utf8(Status::offline(None).to_json()).unwrap(), r#"{"state":"offline"}"#);
        let telemetry = Telemetry {
            backlog_frames: 3,
            backlog_bytes: 4000,
            oldest_age_s: Some(12),
            last_receipt_age_s: None,
            cameras: vec![CameraTelemetry { id: "door".into(), fps: 1.5 }],
            rss_bytes: 1 << 20,
            disk_free_bytes: 1 << 30,
            temperature_c: Some(48.5),
            sent_at_ms: 9,
        };
        let json = serde_json::to_value(&telemetry).unwrap();
        assert_eq!(json["cameras"][0], serde_json::json!({"id": "door", "fps": 1.5}));
        assert!(json.get("last_receipt_age_s").is_none(), "absent, not null: {json}");
        assert_eq!(serde_json::from_value::<Telemetry>(json).unwrap(), telemetry);
    }
}
