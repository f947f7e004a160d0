//! The config blob of the CNCF Wasm OCI layout (`application/vnd.wasm.config.v0+json`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Builds the config JSON of the CNCF TAG Runtime "Wasm OCI Artifact" layout for a component.
///
/// ```json
/// {
///   "created": "2025-01-02T03:04:05Z",
///   "architecture": "wasm",
///   "os": "wasip2",
///   "layerDigests": ["sha256:<digest of the component>"],
///   "component": { "exports": [...], "imports": [...], "target": "<world>" }
/// }
/// ```
///
/// `created` is written as RFC 3339 in UTC with whole seconds. The layout's optional `author`
/// is left out, as is `component.target` when `world` is `None`. `imports` and `exports` keep
/// the caller's order (fully qualified interface names such as `wasi:http/handler@0.2.0`, or
/// plain names for functions). The output depends on nothing but the arguments, so the same
/// component and time always give the same config, and so the same manifest digest.
pub fn wasm_config(
    component: &[u8],
    world: Option<&str>,
    imports: &[String],
    exports: &[String],
    created: SystemTime,
) -> Vec<u8> {
    let config = WasmConfig {
        created: rfc3339(created),
        architecture: "wasm",
        os: "wasip2",
        layer_digests: [sha256_digest(component)],
        component: ComponentInfo { exports, imports, target: world },
    };
    // A struct of strings and string slices always serializes.
    serde_json::to_vec(&config).expect("a config of strings serializes")
}

/// The config's fields, in the layout's spelling.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: String,
    architecture: &'static str,
    os: &'static str,
    /// The digests of the manifest's layers, in manifest order; this makes the config (and so
    /// the manifest) unique per component.
    layer_digests: [String; 1],
    component: ComponentInfo<'a>,
}

#[derive(Serialize)]
struct ComponentInfo<'a> {
    exports: &'a [String],
    imports: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

/// `sha256:<hex>`, the OCI spelling of a digest.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a point in time (whole seconds, UTC).
fn rfc3339(time: SystemTime) -> String {
    let seconds: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: round towards the past, as the positive case does.
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() > 0 { -whole - 1 } else { -whole }
        }
    };
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        let at = |seconds: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_millis(1)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn the_config_follows_the_cncf_layout() {
        let component = b"\0asm\x0d\0\x01\0";
        let config = wasm_config(
            component,
            Some("flumen:operator/map@0.1.0"),
            &["wasi:io/streams@0.2.0".to_owned()],
            &["flumen:operator/process@0.1.0".to_owned()],
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let json: serde_json::Value = serde_json::from_slice(&config).expect("config is JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "created": "2023-11-14T22:13:20Z",
                "architecture": "wasm",
                "os": "wasip2",
                "layerDigests": [sha256_digest(component)],
                "component": {
                    "exports": ["flumen:operator/process@0.1.0"],
                    "imports": ["wasi:io/streams@0.2.0"],
                    "target": "flumen:operator/map@0.1.0",
                },
            })
        );
        let without_world = wasm_config(component, None, &[], &[], UNIX_EPOCH);
        let json: serde_json::Value = serde_json::from_slice(&without_world).expect("config is JSON");
        assert_eq!(json["component"], serde_json::json!({"exports": [], "imports": []}));
    }
}
