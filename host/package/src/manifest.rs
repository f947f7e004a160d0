//! The package manifest: what an author writes in `package.toml` ([`PackageSource`]), the full
//! [`Manifest`] a built package carries, and the checks both pass (names, capabilities, state
//! layout versions, the config schema).

use std::fmt;
use std::path::Path;

use semver::Version;
use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::{digest_problem, is_digest};
use crate::fsio::{self, ReadError};
use crate::package::{MANIFEST_BYTES_MAX, PackageError};

/// The most characters a package name may have.
pub const NAME_CHARS_MAX: usize = 64;

/// The most bytes of the `wit` field (a world's package name and version).
pub const WIT_BYTES_MAX: usize = 256;

/// What an author writes in `package.toml`: everything in a [`Manifest`] except what building
/// the package fills in (the WIT version the component targets, and the component's digest).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSource {
    /// Lowercase letters, digits, `-` and `_`; starts with a letter; 1 to [`NAME_CHARS_MAX`].
    #[serde(deserialize_with = "de_name")]
    pub name: String,
    pub version: Version,
    pub description: String,
    #[serde(default)]
    pub license: Option<String>,
    /// The host capabilities the operator uses (default `["log"]`).
    #[serde(default = "default_capabilities", deserialize_with = "de_capabilities")]
    pub capabilities: Vec<Capability>,
    /// The layout version of the state the operator keeps (default 1).
    #[serde(default = "default_state_schema")]
    pub state_schema: u32,
    /// Older `state_schema` versions this version can restore from.
    #[serde(default)]
    pub migrates_from: Vec<u32>,
    #[serde(default)]
    pub resources: Resources,
    /// A JSON Schema the operator's config must satisfy (written as TOML in `package.toml`).
    #[serde(default, deserialize_with = "de_config_schema")]
    pub config_schema: Option<serde_json::Value>,
}

/// A built package's manifest: the [`PackageSource`] fields plus the WIT version the component
/// targets and the component's digest and size. Its canonical JSON is `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    pub capabilities: Vec<Capability>,
    pub state_schema: u32,
    pub migrates_from: Vec<u32>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
    /// The WIT package the component targets, e.g. `flumen:dataflow@0.2.0`.
    pub wit: String,
    pub component: ComponentRef,
}

/// The component a manifest names: its digest and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    /// `sha256:<64 lowercase hex>` of the component's bytes.
    pub digest: String,
    pub size: u64,
}

/// A host capability an operator may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Log,
    State,
    Blobs,
    Inference,
}

/// What the operator asks of the machine it runs on; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

/// A config that does not satisfy its package's config schema: every violation, each with the
/// JSON pointer of the value at fault (`""` is the whole config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// `name@version` of the package whose schema refused the config.
    pub package: String,
    pub violations: Vec<ConfigViolation>,
}

/// One way a config breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigViolation {
    /// JSON pointer to the offending value in the config (`""` for the config itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the config does not satisfy the config schema of package `{}`:", self.package)?;
        for v in &self.violations {
            let path = if v.path.is_empty() { "(the whole config)" } else { &v.path };
            write!(f, "\n  {path}: {}", v.message)?;
        }
        Ok(())
    }
}

impl PackageSource {
    /// Reads and checks a `package.toml`. Errors name the file and, where the problem has a
    /// place, the line.
    pub fn from_toml_file(path: &Path) -> Result<PackageSource, PackageError> {
        let text = fsio::read_text_limited(path, MANIFEST_BYTES_MAX).map_err(|e| match e {
            ReadError::Io(source) => PackageError::Read { path: path.to_path_buf(), source },
            ReadError::TooLarge { size } => {
                PackageError::TooLarge { path: path.to_path_buf(), what: "package.toml", size, max: MANIFEST_BYTES_MAX }
            }
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and checks `package.toml` text; `origin` names it in errors (a file name).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<PackageSource, PackageError> {
        let source: PackageSource = toml::from_str(text).map_err(|e| PackageError::Toml {
            origin: origin.to_owned(),
            line: fsio::toml_error_line(text, &e),
            message: e.message().trim_end().to_owned(),
        })?;
        source.check().map_err(|(key, message)| PackageError::Invalid { origin: origin.to_owned(), key, message })?;
        Ok(source)
    }

    /// The checks a manifest's author-written fields pass, as `(key, problem)`.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        check_fields(
            &self.name,
            &self.capabilities,
            self.state_schema,
            &self.migrates_from,
            &self.resources,
            self.config_schema.as_ref(),
        )
    }
}

impl Manifest {
    /// `name@version`, as messages name a package.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks `config` against the package's config schema; no schema accepts any config.
    pub fn check_config(&self, config: &serde_json::Value) -> Result<(), ConfigErrors> {
        let Some(schema) = &self.config_schema else { return Ok(()) };
        let fail = |violations| ConfigErrors { package: self.id(), violations };
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            fail(vec![ConfigViolation { path: String::new(), message: format!("the config schema is invalid: {e}") }])
        })?;
        let violations: Vec<ConfigViolation> = validator
            .iter_errors(config)
            .map(|e| ConfigViolation { path: e.instance_path().as_str().to_owned(), message: e.to_string() })
            .collect();
        if violations.is_empty() { Ok(()) } else { Err(fail(violations)) }
    }

    /// Whether this version can take over the state `old` kept: the same `state_schema`, or
    /// `old`'s listed in this version's `migrates_from`. The error names both versions.
    pub fn state_compatible(&self, old: &Manifest) -> Result<(), String> {
        if self.state_schema == old.state_schema || self.migrates_from.contains(&old.state_schema) {
            return Ok(());
        }
        let migrates = if self.migrates_from.is_empty() {
            "no older layout".to_owned()
        } else {
            let list: Vec<String> = self.migrates_from.iter().map(u32::to_string).collect();
            format!("only from state_schema {}", list.join(", "))
        };
        Err(format!(
            "`{}` keeps state_schema {} and cannot restore the state of `{}` (state_schema {}): it migrates {migrates}",
            self.id(),
            self.state_schema,
            old.id(),
            old.state_schema
        ))
    }

    /// Checks every field, as `(key, problem)`: what [`PackageSource`] checks, plus `wit` and
    /// `component`.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        check_fields(
            &self.name,
            &self.capabilities,
            self.state_schema,
            &self.migrates_from,
            &self.resources,
            self.config_schema.as_ref(),
        )?;
        check_wit(&self.wit).map_err(|m| ("wit", m))?;
        if !is_digest(&self.component.digest) {
            let problem = digest_problem(&self.component.digest);
            return Err(("component.digest", format!("`{}` is not a digest: {problem}", self.component.digest)));
        }
        Ok(())
    }
}

impl Resources {
    /// Whether no resource is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

impl Capability {
    /// The name a manifest and a job spec write.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::State => "state",
            Capability::Blobs => "blobs",
            Capability::Inference => "inference",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a package name: lowercase ASCII letters, digits, `-` and `_`, starting with a letter,
/// 1 to [`NAME_CHARS_MAX`] characters. The error says which rule it breaks.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a package name cannot be empty".to_owned());
    }
    if name.len() > NAME_CHARS_MAX {
        return Err(format!("package name is {} characters; the most is {NAME_CHARS_MAX}", name.len()));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("package name `{}` must start with a lowercase letter", name.escape_debug()));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_')) {
        return Err(format!(
            "package name `{}` holds `{}`; only lowercase letters, digits, `-` and `_` are allowed",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a JSON Schema against its draft's meta-schema, so a bad schema is refused when the
/// package is built rather than when a job is planned.
pub fn check_config_schema(schema: &serde_json::Value) -> Result<(), String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a config schema must be a table (a JSON Schema object)".to_owned());
    }
    // A `$schema` other than the drafts the validator bundles would make it fetch a
    // meta-schema (and its meta-schema helpers panic when they cannot): refuse it first.
    if let Some(uri) = schema.get("$schema") {
        let known = uri.as_str().is_some_and(|u| KNOWN_DRAFTS.contains(&u.trim_end_matches('#')));
        if !known {
            return Err(format!(
                "`$schema` = {uri} is not a JSON Schema draft this host knows; use one of {} or leave it out",
                KNOWN_DRAFTS.join(", ")
            ));
        }
    }
    jsonschema::validator_for(schema).map(|_| ()).map_err(|e| {
        let at = e.schema_path().as_str();
        let at = if at.is_empty() { String::new() } else { format!(" (at {at})") };
        format!("not a valid JSON Schema{at}: {e}")
    })
}

/// The `$schema` URIs (without a trailing `#`) whose meta-schemas the validator bundles.
const KNOWN_DRAFTS: &[&str] = &[
    "http://json-schema.org/draft-04/schema",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
];

fn check_fields(
    name: &str,
    capabilities: &[Capability],
    state_schema: u32,
    migrates_from: &[u32],
    resources: &Resources,
    config_schema: Option<&serde_json::Value>,
) -> Result<(), (&'static str, String)> {
    check_name(name).map_err(|m| ("name", m))?;
    check_capabilities(capabilities).map_err(|m| ("capabilities", m))?;
    if state_schema == 0 {
        return Err(("state_schema", "state_schema starts at 1".to_owned()));
    }
    for &old in migrates_from {
        if old == 0 || old >= state_schema {
            return Err((
                "migrates_from",
                format!(
                    "migrates_from lists {old}, but only older layouts (1 to {}) can be migrated from",
                    state_schema - 1
                ),
            ));
        }
    }
    if resources.cores == Some(0) {
        return Err(("resources.cores", "cores = 0 asks for nothing; leave it out instead".to_owned()));
    }
    if resources.memory_mb == Some(0) {
        return Err(("resources.memory_mb", "memory_mb = 0 asks for nothing; leave it out instead".to_owned()));
    }
    if let Some(schema) = config_schema {
        check_config_schema(schema).map_err(|m| ("config_schema", m))?;
    }
    Ok(())
}

fn check_capabilities(capabilities: &[Capability]) -> Result<(), String> {
    for (i, c) in capabilities.iter().enumerate() {
        if capabilities[..i].contains(c) {
            return Err(format!("capability `{c}` is listed twice"));
        }
    }
    Ok(())
}

fn check_wit(wit: &str) -> Result<(), String> {
    if wit.is_empty() {
        return Err("the WIT package the component targets is missing (e.g. `flumen:dataflow@0.2.0`)".to_owned());
    }
    if wit.len() > WIT_BYTES_MAX {
        return Err(format!("the WIT package name is {} bytes; the most is {WIT_BYTES_MAX}", wit.len()));
    }
    if wit.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the WIT package name `{}` holds whitespace", wit.escape_debug()));
    }
    Ok(())
}

fn default_capabilities() -> Vec<Capability> {
    vec![Capability::Log]
}

fn default_state_schema() -> u32 {
    1
}

// The checks run while deserializing, so toml attaches the offending value's line to them.

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_name(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

fn de_capabilities<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Capability>, D::Error> {
    let capabilities = Vec::<Capability>::deserialize(d)?;
    check_capabilities(&capabilities).map_err(serde::de::Error::custom)?;
    Ok(capabilities)
}

fn de_config_schema<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    let schema = serde_json::Value::deserialize(d)?;
    check_config_schema(&schema).map_err(serde::de::Error::custom)?;
    Ok(Some(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MINIMAL: &str = "name = \"upper\"\nversion = \"1.2.0\"\ndescription = \"Upper-cases text\"\n";

    fn parse(text: &str) -> Result<PackageSource, PackageError> {
        PackageSource::from_toml_str(text, "package.toml")
    }

    fn manifest(source: PackageSource) -> Manifest {
        Manifest {
            name: source.name,
            version: source.version,
            description: source.description,
            license: source.license,
            capabilities: source.capabilities,
            state_schema: source.state_schema,
            migrates_from: source.migrates_from,
            resources: source.resources,
            config_schema: source.config_schema,
            wit: "flumen:dataflow@0.2.0".to_owned(),
            component: ComponentRef { digest: crate::digest::content_digest(b""), size: 0 },
        }
    }

    #[test]
    fn minimal_source_takes_the_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "upper");
        assert_eq!(s.version, Version::new(1, 2, 0));
        assert_eq!(s.capabilities, vec![Capability::Log]);
        assert_eq!(s.state_schema, 1);
        assert!(s.migrates_from.is_empty());
        assert!(s.resources.is_empty());
        assert_eq!(s.license, None);
        assert_eq!(s.config_schema, None);
    }

    #[test]
    fn full_source_parses_every_field() {
        let text = format!(
            "{MINIMAL}license = \"Apache-2.0\"\ncapabilities = [\"log\", \"state\", \"blobs\", \"inference\"]\n\
             state_schema = 3\nmigrates_from = [1, 2]\n[resources]\ncores = 2\nmemory_mb = 512\ngpu = 1\n\
             [config_schema]\ntype = \"object\"\nrequired = [\"threshold\"]\n\
             [config_schema.properties.threshold]\ntype = \"integer\"\nminimum = 0\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.license.as_deref(), Some("Apache-2.0"));
        assert_eq!(s.capabilities.len(), 4);
        assert_eq!((s.state_schema, s.migrates_from.clone()), (3, vec![1, 2]));
        assert_eq!(s.resources, Resources { cores: Some(2), memory_mb: Some(512), gpu: Some(1) });
        assert_eq!(s.config_schema.unwrap()["properties"]["threshold"]["minimum"], json!(0));
    }

    fn error_of(text: &str) -> (Option<usize>, String) {
        match parse(text).unwrap_err() {
            e @ PackageError::Toml { line, .. } => (line, e.to_string()),
            e => (None, e.to_string()),
        }
    }

    #[test]
    fn unknown_field_is_refused_with_its_line() {
        let (line, message) = error_of(&format!("{MINIMAL}colour = \"red\"\n"));
        assert_eq!(line, Some(4), "{message}");
        assert!(message.starts_with("package.toml:4: "), "{message}");
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn bad_name_is_refused_with_its_line() {
        let (line, message) = error_of("version = \"1.0.0\"\ndescription = \"x\"\nname = \"Upper\"\n");
        assert_eq!(line, Some(3), "{message}");
        assert!(message.contains("must start with a lowercase letter"), "{message}");
        let (_, message) = error_of("name = \"up per\"\nversion = \"1.0.0\"\ndescription = \"x\"\n");
        assert!(message.contains("only lowercase letters"), "{message}");
        let long = "a".repeat(NAME_CHARS_MAX + 1);
        let (_, message) = error_of(&format!("name = \"{long}\"\nversion = \"1.0.0\"\ndescription = \"x\"\n"));
        assert!(message.contains("the most is 64"), "{message}");
    }

    #[test]
    fn bad_version_and_capability_are_refused_with_their_lines() {
        let (line, message) = error_of("name = \"upper\"\nversion = \"1.2\"\ndescription = \"x\"\n");
        assert_eq!(line, Some(2), "{message}");
        let (line, message) = error_of(&format!("{MINIMAL}capabilities = [\"log\", \"network\"]\n"));
        assert_eq!(line, Some(4), "{message}");
        assert!(message.contains("network"), "{message}");
        let (line, message) = error_of(&format!("{MINIMAL}capabilities = [\"log\", \"log\"]\n"));
        assert_eq!(line, Some(4), "{message}");
        assert!(message.contains("listed twice"), "{message}");
    }

    #[test]
    fn missing_description_is_named() {
        let (_, message) = error_of("name = \"upper\"\nversion = \"1.2.0\"\n");
        assert!(message.contains("description"), "{message}");
    }

    #[test]
    fn bad_config_schema_is_refused_with_its_line() {
        let (line, message) = error_of(&format!("{MINIMAL}[config_schema]\ntype = \"thing\"\n"));
        assert_eq!(line, Some(4), "{message}");
        assert!(message.contains("not a valid JSON Schema"), "{message}");
        let (_, message) =
            error_of(&format!("{MINIMAL}[config_schema]\n\"$schema\" = \"https://example.invalid/s\"\n"));
        assert!(message.contains("not a JSON Schema draft this host knows"), "{message}");
        // A schema that would need fetching is refused when packaging, not at plan time.
        let remote = format!("{MINIMAL}[config_schema]\n\"$ref\" = \"https://example.invalid/s.json\"\n");
        let (line, message) = error_of(&remote);
        assert_eq!(line, Some(4), "{message}");
        assert!(message.contains("not a valid JSON Schema"), "{message}");
        let draft7 = format!("{MINIMAL}[config_schema]\n\"$schema\" = \"http://json-schema.org/draft-07/schema#\"\n");
        parse(&draft7).unwrap();
    }

    #[test]
    fn migrating_from_a_newer_layout_is_refused_naming_the_key() {
        let err = parse(&format!("{MINIMAL}state_schema = 2\nmigrates_from = [2]\n")).unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "migrates_from", .. }), "{err}");
        assert!(err.to_string().contains("package.toml"), "{err}");
        let err = parse(&format!("{MINIMAL}state_schema = 0\n")).unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "state_schema", .. }), "{err}");
    }

    #[test]
    fn zero_resources_are_refused() {
        let err = parse(&format!("{MINIMAL}[resources]\ncores = 0\n")).unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "resources.cores", .. }), "{err}");
        let err = parse(&format!("{MINIMAL}[resources]\nthreads = 2\n")).unwrap_err();
        assert!(err.to_string().contains("threads"), "{err}");
    }

    #[test]
    fn oversized_package_toml_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("package.toml");
        std::fs::File::create(&path).unwrap().set_len(MANIFEST_BYTES_MAX + 1).unwrap();
        let err = PackageSource::from_toml_file(&path).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge { what: "package.toml", .. }), "{err}");
    }

    #[test]
    fn from_toml_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("package.toml");
        std::fs::write(&path, format!("{MINIMAL}bogus = 1\n")).unwrap();
        let err = PackageSource::from_toml_file(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(err.to_string().contains(":4:"), "{err}");
        let missing = PackageSource::from_toml_file(&dir.path().join("absent.toml")).unwrap_err();
        assert!(missing.to_string().contains("absent.toml"), "{missing}");
    }

    #[test]
    fn check_config_lists_each_violation_with_its_path() {
        let text = format!(
            "{MINIMAL}[config_schema]\ntype = \"object\"\nrequired = [\"threshold\"]\nadditionalProperties = false\n\
             [config_schema.properties.threshold]\ntype = \"integer\"\nminimum = 0\n\
             [config_schema.properties.columns]\ntype = \"array\"\nitems = {{ type = \"string\" }}\n"
        );
        let m = manifest(parse(&text).unwrap());
        m.check_config(&json!({"threshold": 3, "columns": ["a"]})).unwrap();

        let err = m.check_config(&json!({"threshold": -1, "columns": ["a", 7]})).unwrap_err();
        let paths: Vec<&str> = err.violations.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"/threshold"), "{err}");
        assert!(paths.contains(&"/columns/1"), "{err}");
        assert_eq!(err.package, "upper@1.2.0");
        assert!(err.to_string().contains("/columns/1: 7 is not of type \"string\""), "{err}");

        let err = m.check_config(&json!({"colour": "red"})).unwrap_err();
        assert!(err.violations.iter().any(|v| v.path.is_empty() && v.message.contains("threshold")), "{err}");
        assert!(err.to_string().contains("(the whole config)"), "{err}");
    }

    #[test]
    fn no_schema_accepts_any_config() {
        let m = manifest(parse(MINIMAL).unwrap());
        m.check_config(&json!({"anything": [1, 2]})).unwrap();
    }

    #[test]
    fn state_compatible_follows_migrates_from() {
        let v1 = manifest(parse(MINIMAL).unwrap());
        let mut v2 = v1.clone();
        v2.version = Version::new(2, 0, 0);
        v2.state_schema = 2;
        let mut v1b = v1.clone();
        v1b.version = Version::new(1, 3, 0);
        v1b.check().unwrap();
        assert_eq!(v1b.state_compatible(&v1), Ok(()));

        let err = v2.state_compatible(&v1).unwrap_err();
        assert!(err.contains("upper@2.0.0") && err.contains("state_schema 2"), "{err}");
        assert!(err.contains("upper@1.2.0") && err.contains("state_schema 1"), "{err}");

        v2.migrates_from = vec![1];
        assert_eq!(v2.state_compatible(&v1), Ok(()));
        // Going back to the old layout is not a migration this manifest declares.
        let err = v1.state_compatible(&v2).unwrap_err();
        assert!(err.contains("no older layout"), "{err}");
    }

    #[test]
    fn manifest_check_covers_wit_and_component() {
        let mut m = manifest(parse(MINIMAL).unwrap());
        m.check().unwrap();
        m.wit = String::new();
        assert_eq!(m.check().unwrap_err().0, "wit");
        m.wit = "flumen:dataflow@0.2.0".to_owned();
        m.component.digest = "sha256:12".to_owned();
        assert_eq!(m.check().unwrap_err().0, "component.digest");
    }
}
