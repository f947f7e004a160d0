//! The typed, versioned record a checkpoint participant (one subtask) keeps in
//! its manifest entry beside its files: a source's position and watermark, a
//! sink's pending transactions, an operator's state chain and guest snapshot,
//! and for all of them the in-flight batches and pinned blobs.
//!
//! The manifest stores it as JSON under the participant's `meta`. It is read
//! strictly: an unknown field or an unknown version is an error naming the
//! participant, never a silently defaulted value. Version 1 is the layout of
//! manifests written before the record carried a version (the same fields,
//! with `pending` also accepted as a single transaction or `null`).

use flumen_blob::{Digest, PinnedBlob};
use flumen_connectors::{SourcePosition, Transaction};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The version this engine writes.
pub(crate) const META_VERSION: u32 = 2;
/// The oldest version it reads.
const META_VERSION_MIN: u32 = 1;

/// What one participant recorded in one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParticipantMeta {
    /// [`META_VERSION`] when written; absent in version 1.
    #[serde(default = "version_1")]
    pub(crate) v: u32,
    /// The subtask had ended: it does nothing on restore but wait for its inputs to end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) finished: bool,
    /// A source's resume point, opaque to the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) position: Option<SourcePosition>,
    /// A source's watermark at the barrier (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) watermark: Option<i64>,
    /// A sink's last barrier (a finished sink: the id its last transaction is named after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checkpoint: Option<u64>,
    /// A sink's pre-committed transactions not yet known to be published, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "pending_list")]
    pub(crate) pending: Vec<Transaction>,
    /// Batches recorded between the barriers of an unaligned checkpoint, one file per port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) inflight: Vec<InflightFile>,
    /// An operator's keyed-state chain: a full snapshot, then deltas (file names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) state: Vec<String>,
    /// An operator's guest snapshot (file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) guest: Option<String>,
    /// Blobs the guest retained (SHA-256 digests in hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) retained: Vec<String>,
    /// Blobs this checkpoint pinned so that they outlive a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) blobs: Vec<PinnedBlob>,
    /// The version of an operator that processes what comes after the
    /// barrier, once a live upgrade changed it from the spec's (`upgrade.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<crate::upgrade::VersionRecord>,
}

/// The in-flight batches of one input port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InflightFile {
    pub(crate) port: u32,
    pub(crate) file: String,
}

fn version_1() -> u32 {
    1
}

/// `pending`: a list of transactions; version 1 also wrote one transaction, or `null` for none.
fn pending_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Transaction>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        single => vec![single],
    };
    items
        .into_iter()
        .filter(|v| !v.is_null())
        .map(|v| Transaction::deserialize(v).map_err(serde::de::Error::custom))
        .collect()
}

impl Default for ParticipantMeta {
    /// An empty record of the current version.
    fn default() -> Self {
        Self {
            v: META_VERSION,
            finished: false,
            position: None,
            watermark: None,
            checkpoint: None,
            pending: Vec::new(),
            inflight: Vec::new(),
            state: Vec::new(),
            guest: None,
            retained: Vec::new(),
            blobs: Vec::new(),
            version: None,
        }
    }
}

impl ParticipantMeta {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A finished subtask's record.
    pub(crate) fn finished() -> Self {
        Self { finished: true, ..Self::new() }
    }

    /// Reads a manifest's `meta` of `participant`. Its version is checked
    /// first, so a record from a newer engine is named as such rather than as
    /// a field this one does not know.
    pub(crate) fn parse(participant: &str, meta: &Value) -> Result<Self, String> {
        let version = match meta.get("v") {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("participant `{participant}`: metadata version {v} is not a number"))?,
        };
        if !(META_VERSION_MIN..=META_VERSION).contains(&version) {
            return Err(format!(
                "participant `{participant}`: metadata version {version} is unknown (this Flumen reads versions \
                 {META_VERSION_MIN} to {META_VERSION}); the checkpoint was written by another version of Flumen"
            ));
        }
        Self::deserialize(meta).map_err(|e| format!("participant `{participant}`: malformed metadata: {e}"))
    }

    /// The manifest's JSON form.
    pub(crate) fn to_value(&self) -> Value {
        // A struct of strings, numbers and lists of them: its JSON form cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The retained digests, each checked.
    pub(crate) fn retained_digests(&self) -> Result<Vec<Digest>, String> {
        self.retained
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| format!("malformed retained blob digest `{h}` in the manifest"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_round_trips_with_its_version() {
        let mut m = ParticipantMeta::new();
        m.checkpoint = Some(7);
        m.state = vec!["a".into(), "b".into()];
        m.inflight = vec![InflightFile { port: 1, file: "f".into() }];
        let v = m.to_value();
        assert_eq!(v["v"], json!(META_VERSION));
        assert_eq!(ParticipantMeta::parse("p[0]", &v).unwrap(), m);
        // Empty parts are left out.
        assert!(v.get("pending").is_none() && v.get("finished").is_none());
    }

    #[test]
    fn a_record_without_a_version_is_version_1() {
        let v = json!({ "checkpoint": 3, "pending": null, "finished": true, "inflight": [] });
        let m = ParticipantMeta::parse("sink[0]", &v).unwrap();
        assert_eq!((m.v, m.finished, m.checkpoint, m.pending.len()), (1, true, Some(3), 0));
    }

    #[test]
    fn an_unknown_version_is_an_error_not_a_default() {
        let e = ParticipantMeta::parse("count[1]", &json!({ "v": 99, "novel": 1 })).unwrap_err();
        assert!(e.contains("count[1]") && e.contains("version 99 is unknown"), "{e}");
        let e = ParticipantMeta::parse("count[1]", &json!({ "v": "two" })).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let e = ParticipantMeta::parse("count[1]", &json!({ "v": 0 })).unwrap_err();
        assert!(e.contains("version 0 is unknown"), "{e}");
    }

    #[test]
    fn an_unknown_or_mistyped_field_is_an_error() {
        let e = ParticipantMeta::parse("s[0]", &json!({ "v": 2, "finnished": true })).unwrap_err();
        assert!(e.contains("s[0]") && e.contains("finnished"), "{e}");
        let e = ParticipantMeta::parse("s[0]", &json!({ "v": 2, "watermark": "late" })).unwrap_err();
        assert!(e.contains("malformed metadata"), "{e}");
        let e = ParticipantMeta::parse("s[0]", &json!({ "v": 2, "inflight": [{ "port": 0 }] })).unwrap_err();
        assert!(e.contains("file"), "{e}");
    }

    #[test]
    fn retained_digests_are_checked() {
        let mut m = ParticipantMeta::new();
        m.retained = vec![hex::encode([7u8; 32])];
        assert_eq!(m.retained_digests().unwrap(), vec![[7u8; 32]]);
        m.retained.push("zz".into());
        assert!(m.retained_digests().unwrap_err().contains("`zz`"));
    }
}
