//! MAC addresses as people read and write them: `aa:bb:cc:dd:ee:ff`.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MAC address; shown and parsed as `aa:bb:cc:dd:ee:ff`, serialised as that string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random locally administered unicast MAC, from the kernel's CSPRNG.
    pub fn random() -> Self {
        let mut mac = [0u8; 6];
        // Reading the kernel's CSPRNG cannot fail on Linux; a zero MAC would still be fixed up.
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut mac));
        mac[0] = (mac[0] & 0xfe) | 0x02;
        Mac(mac)
    }

    /// A group (multicast or broadcast) address: never a host's.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// Twelve hex digits without separators (how IPAM's conflict markers store it).
    pub fn to_hex(self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The inverse of [`Mac::to_hex`].
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 12 {
            return None;
        }
        let mut mac = [0u8; 6];
        for (at, byte) in mac.iter_mut().enumerate() {
            *byte = hex_byte(hex.get(at * 2..at * 2 + 2)?)?;
        }
        Some(Mac(mac))
    }
}

/// Two hex digits (`from_str_radix` alone would take a sign, as in `+f`).
fn hex_byte(text: &str) -> Option<u8> {
    if text.len() != 2 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(text, 16).ok()
}

impl From<[u8; 6]> for Mac {
    fn from(mac: [u8; 6]) -> Self {
        Mac(mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(out, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a text is not a MAC address.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct NotAMac(pub String);

impl FromStr for Mac {
    type Err = NotAMac;

    /// Six two-digit hex bytes separated by `:`, either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || NotAMac(text.to_owned());
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            let part = parts.next().and_then(hex_byte).ok_or_else(invalid)?;
            *byte = part;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Mac(mac))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
impl schemars::JsonSchema for Mac {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A MAC address, aa:bb:cc:dd:ee:ff",
            "pattern": "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_as_text_hex_and_json() {
        let mac = Mac([0x02, 0xab, 0x00, 0x10, 0xff, 0x01]);
        assert_eq!(mac.to_string(), "02:ab:00:10:ff:01");
        assert_eq!("02:AB:00:10:ff:01".parse(), Ok(mac));
        assert_eq!(mac.to_hex(), "02ab0010ff01");
        assert_eq!(Mac::from_hex(&mac.to_hex()), Some(mac));
        assert_eq!(
            serde_json::to_string(&mac).expect("json"),
            "\"02:ab:00:10:ff:01\""
        );
        assert_eq!(
            serde_json::from_str::<Mac>("\"02:ab:00:10:ff:01\"").expect("json"),
            mac
        );
    }

    #[test]
    fn what_is_not_a_mac_is_refused() {
        for text in [
            "",
            "02:ab:00:10:ff",
            "02:ab:00:10:ff:01:02",
            "2:ab:00:10:ff:01",
            "02-ab-00-10-ff-01",
            "zz:ab:00:10:ff:01",
            "+f:ab:00:10:ff:01",
        ] {
            assert_eq!(text.parse::<Mac>(), Err(NotAMac(text.to_owned())), "{text}");
        }
        assert_eq!(Mac::from_hex("02ab0010ff"), None);
        assert_eq!(Mac::from_hex("02ab0010ffzz"), None);
        assert_eq!(Mac::from_hex("+fab0010ff01"), None);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        let mac = Mac::random();
        assert!(!mac.is_multicast());
        assert_eq!(mac.0[0] & 2, 2);
    }
}
