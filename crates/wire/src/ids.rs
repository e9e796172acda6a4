//! Names that outlive one box. A box is a [`DeviceId`] (a ULID made at first start);
//! a thing on it is named across the fleet by (device id, local id), because the hub
//! sees many boxes and local ids such as frame 7 or consent `c1` collide between them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One box among a fleet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(ulid::Ulid);

impl DeviceId {
    /// A new id from the time it is made and 128 random bits (of which a ULID keeps 80),
    /// so that ids sort by when boxes were set up. The caller brings the randomness.
    pub fn new(unix_ms: u64, random: [u8; 16]) -> DeviceId {
        DeviceId(ulid::Ulid::from_parts(unix_ms, u128::from_be_bytes(random)))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DeviceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ulid::Ulid::from_string(s).map(DeviceId).map_err(|e| format!("`{s}` is not a device id (a ULID): {e}"))
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A thing's name across the fleet: the box it was made on and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetId<T> {
    pub device: DeviceId,
    pub local: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_id_round_trips_as_text_and_on_the_wire() {
        let id = DeviceId::new(1_700_000_000_000, [7; 16]);
        assert_eq!(id.to_string().len(), 26, "a ULID");
        assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), id);
        assert!("not an id".parse::<DeviceId>().unwrap_err().contains("not a device id"));
        let wire = serde_json::to_value(FleetId { device: id, local: 7 }).unwrap();
        assert_eq!(wire, serde_json::json!({ "device": id.to_string(), "local": 7 }));
        let back: FleetId<i64> = serde_json::from_value(wire).unwrap();
        assert_eq!(back.device, id);
    }
}
