//! `flumen plugin keygen|package|sign|verify|publish|pull|search|info`: operator packages
//! (a component, its manifest and signatures), the keys that sign them, and the registries
//! that hold them. The formats are `flumen-package`'s; the OCI layout is `crate::packages`'.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use flumen_package::{Capability, Package, PackageSource, SigningKey, TrustedBy};
use semver::{Version, VersionReq};

use crate::packages::{self, ComponentWorld, Source};

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Writes `<PREFIX>.pem` (the private key, mode 0600) and `<PREFIX>.pub.pem`.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// The plugin's directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The package manifest (default: `<DIR>/package.toml`).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// The component to package (default: build the plugin in DIR).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,
    /// Where to write the package (default: `<DIR>/target/package/<name>-<version>/`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The package directory (`flumen plugin package` writes one).
    package: PathBuf,
    /// The private key (PKCS#8 PEM, as `flumen plugin keygen` writes).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

use crate::lock::TrustArgs;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A package directory, or `name@version` in the local store.
    package: String,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The package directory.
    package: PathBuf,
    /// A directory registry or `oci://host[:port]/namespace` (default: the local store).
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// `name@version`, or `name@<requirement>` (`name@^1.2`) for the highest version that fits.
    reference: String,
    /// A directory registry or `oci://host[:port]/namespace` (default: the local store).
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// `name@version` (or `name@<requirement>`).
    reference: String,
    /// Where the package is (default: the local store); workers pull it from there.
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    at: crate::cluster::ClusterDir,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Text in a package's name or description (all packages when left out); for an OCI
    /// registry, the package name whose versions to list.
    text: Option<String>,
    /// A directory registry or `oci://host[:port]/namespace` (default: the local store).
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// `name` (its latest version) or `name@version`.
    package: String,
    /// A directory registry or `oci://host[:port]/namespace` (default: the local store).
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
}

/// `flumen plugin keygen`: a new Ed25519 key pair, and the trust file entry for it.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let private = with_suffix(&args.out, ".pem");
    let public = with_suffix(&args.out, ".pub.pem");
    let key = SigningKey::generate()?;
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    key.write_pem_files(&private, &public)?;
    let name = args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "publisher".into());
    println!("key id {}", key.key_id());
    println!("  private key {} (keep it secret: it signs packages)", private.display());
    println!("  public key  {}", public.display());
    println!();
    println!("To trust packages signed with it, add this to a trust file (trust.toml):");
    println!();
    println!("[[key]]");
    println!("name = {}", toml_string(&name));
    println!("public_key_pem = \"\"\"\n{}\"\"\"", key.public_key().to_pem());
    println!("packages = [\"*\"]");
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin package`: a package directory from a plugin and its `package.toml`.
pub fn package(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let manifest_path = args.manifest.clone().unwrap_or_else(|| args.dir.join("package.toml"));
    let source = PackageSource::from_toml_file(&manifest_path)?;
    let component_path = match &args.component {
        Some(path) => path.clone(),
        None => super::build(&args.dir, None)?.path,
    };
    let bytes = read_component(&component_path)?;
    let world = ComponentWorld::inspect(&component_path)?;
    let Some(target) = &world.target else {
        bail!("{} is not a Flumen operator: it does not export flumen:dataflow/transform", component_path.display());
    };
    let missing: Vec<&str> = world
        .capabilities()
        .into_iter()
        .filter(|import| !source.capabilities.iter().any(|c| c.as_str() == *import))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} imports {}, which {} does not declare in `capabilities`: add {} there (known: {})",
            component_path.display(),
            missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
            manifest_path.display(),
            if missing.len() == 1 { "it" } else { "them" },
            [Capability::Log, Capability::State, Capability::Blobs, Capability::Inference]
                .map(Capability::as_str)
                .join(", ")
        );
    }
    let pkg = Package::build(source, format!("flumen:dataflow@{target}"), &bytes)?;
    let m = pkg.manifest();
    let out = args.out.unwrap_or_else(|| args.dir.join("target/package").join(format!("{}-{}", m.name, m.version)));
    pkg.write_dir(&out)?;
    println!("packaged {} into {}", pkg.id(), out.display());
    println!("  name       {}", m.name);
    println!("  version    {}", m.version);
    println!("  digest     {}", pkg.digest());
    println!("  component  {} ({} bytes)", m.component.digest, m.component.size);
    println!("  wit        {}", m.wit);
    println!("sign it:     flumen plugin sign {} --key <private.pem>", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin sign`: adds a key's signature to a package directory.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let mut pkg = read_package_dir(&args.package)?;
    let key = SigningKey::from_pem_file(&args.key)?;
    let key_id = pkg.sign(&key).key_id.clone();
    pkg.write_dir(&args.package)?;
    println!("signed {} ({}) with key {key_id}", pkg.id(), pkg.digest());
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin verify`: checks a package's contents and whether the trust policy accepts it.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = Path::new(&args.package);
    let pkg = if path.is_dir() || !args.package.contains('@') {
        read_package_dir(path)?
    } else {
        let (name, version) = packages::parse_name_version(&args.package)?;
        let Some(version) = version else { bail!("`{}`: name the version, `name@1.2.0`", args.package) };
        packages::store()?.get(&name, &version)?
    };
    let policy = args.trust.policy()?;
    let by = policy.check(&pkg)?;
    println!("verified: {} {}, {}", pkg.id(), pkg.digest(), trusted_by(&by));
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin publish`: puts a package into a registry, if the trust policy accepts it.
pub fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let pkg = read_package_dir(&args.package)?;
    let policy = args.trust.policy()?;
    let by = policy.check(&pkg).with_context(|| {
        format!("refusing to publish `{}`: a trust policy like this one would not load it", pkg.id())
    })?;
    let source = source(args.registry.as_deref())?;
    let at = block_on(packages::push(&pkg, &source))??;
    println!("published {} ({}, {}) to {at}", pkg.id(), pkg.digest(), trusted_by(&by));
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin pull`: fetches a package, checks it and puts it into the local store.
pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let source = source(args.registry.as_deref())?;
    let policy = args.trust.policy()?;
    let pkg = block_on(async {
        let (name, version) = resolve(&source, &args.reference).await?;
        packages::pull(&source, &name, &version, &policy).await
    })??;
    println!("pulled {} {} into {}", pkg.id(), pkg.digest(), packages::store_dir().display());
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin load`: checks the package here (pulling it into the local
/// store), then has every live worker of the cluster make it ready — pull it
/// from the same registry, verify it against its own trust policy, compile it
/// — with no restart of anything; prints each worker's answer.
pub fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let source = source(args.registry.as_deref())?;
    let policy = args.trust.policy()?;
    block_on(async {
        let (name, version) = resolve(&source, &args.reference).await?;
        let pkg = packages::pull(&source, &name, &version, &policy).await?;
        println!("{} {} checked here; loading it on every worker…", pkg.id(), pkg.digest());
        let package = flumen_cluster::PackageId {
            name: name.clone(),
            version: version.to_string(),
            digest: pkg.digest().to_string(),
        };
        crate::cluster::ask_workers(&args.at, flumen_cluster::Request::Load { package, source: source.to_string() })
            .await
    })?
}

/// `flumen plugin search`: the packages of a registry that match, or an OCI package's versions.
pub fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let source = source(args.registry.as_deref())?;
    match &source {
        Source::Oci { .. } => {
            let Some(name) = args.text else {
                bail!("an OCI registry cannot be searched; name the package whose versions to list");
            };
            let versions = block_on(packages::versions(&source, &name))??;
            if versions.is_empty() {
                eprintln!("no versions of `{name}` in {source}");
            }
            for version in versions {
                println!("{name} {version}");
            }
        }
        Source::Dir(dir) => {
            if !dir.is_dir() {
                bail!("no package registry at {}: it is not a directory", dir.display());
            }
            let registry = flumen_package::DirRegistry::open(dir)?;
            let found = registry.search(args.text.as_deref().unwrap_or(""))?;
            if found.is_empty() {
                eprintln!("no packages match in {source}");
            }
            for summary in found {
                println!("{} {} {}", summary.name, summary.latest, summary.description);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flumen plugin info`: a package's manifest, digest and signatures.
pub fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let source = source(args.registry.as_deref())?;
    let (name, version) = packages::parse_name_version(&args.package)?;
    let (pkg, versions) = block_on(async {
        let versions = packages::versions(&source, &name).await?;
        let version = match version {
            Some(v) => v,
            None => match versions.last() {
                Some(v) => v.clone(),
                None => bail!("no package `{name}` in {source}"),
            },
        };
        anyhow::Ok((packages::fetch(&source, &name, &version).await?, versions))
    })??;
    let m = pkg.manifest();
    println!("name          {}", m.name);
    println!("version       {}", m.version);
    println!("description   {}", m.description);
    if let Some(license) = &m.license {
        println!("license       {license}");
    }
    println!("wit           {}", m.wit);
    let capabilities: Vec<&str> = m.capabilities.iter().map(|c| c.as_str()).collect();
    println!("capabilities  {}", if capabilities.is_empty() { "none".to_owned() } else { capabilities.join(", ") });
    let migrates: Vec<String> = m.migrates_from.iter().map(u32::to_string).collect();
    if migrates.is_empty() {
        println!("state_schema  {}", m.state_schema);
    } else {
        println!("state_schema  {} (migrates from {})", m.state_schema, migrates.join(", "));
    }
    let r = &m.resources;
    let resources: Vec<String> =
        [("cores", r.cores.map(u64::from)), ("memory_mb", r.memory_mb), ("gpu", r.gpu.map(u64::from))]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect();
    if !resources.is_empty() {
        println!("resources     {}", resources.join(" "));
    }
    if let Some(schema) = &m.config_schema {
        println!("config_schema {schema}");
    }
    println!("digest        {}", pkg.digest());
    println!("component     {} ({} bytes)", m.component.digest, m.component.size);
    let keys: Vec<&str> = pkg.signatures().iter().map(|s| s.key_id.as_str()).collect();
    println!("signatures    {}", if keys.is_empty() { "none (unsigned)".to_owned() } else { keys.join(", ") });
    let versions: Vec<String> = versions.iter().map(Version::to_string).collect();
    println!("versions      {}", versions.join(", "));
    println!("source        {source}");
    Ok(ExitCode::SUCCESS)
}

/// The registry `--registry` names, or the local store.
fn source(registry: Option<&str>) -> anyhow::Result<Source> {
    registry.map(Source::parse).transpose().map(Option::unwrap_or_default)
}

/// `name@version`, or `name@<requirement>` resolved to the highest version in `source` that fits.
async fn resolve(source: &Source, reference: &str) -> anyhow::Result<(String, Version)> {
    let Some((name, text)) = reference.split_once('@') else {
        bail!("`{reference}`: name the version, `name@1.2.0` (or a requirement, `name@^1.2`)");
    };
    if let Ok(version) = Version::parse(text) {
        return Ok((name.to_owned(), version));
    }
    let requirement = VersionReq::parse(text)
        .with_context(|| format!("`{reference}`: `{text}` is neither a version (1.2.0) nor a requirement (^1.2)"))?;
    let versions = packages::versions(source, name).await?;
    match versions.into_iter().rev().find(|v| requirement.matches(v)) {
        Some(version) => Ok((name.to_owned(), version)),
        None => bail!("no version of `{name}` in {source} satisfies `{text}`"),
    }
}

fn read_package_dir(dir: &Path) -> anyhow::Result<Package> {
    if !dir.is_dir() {
        bail!("{} is not a package directory (or `name@version`)", dir.display());
    }
    Ok(Package::read_dir(dir)?)
}

fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if size > flumen_package::COMPONENT_BYTES_MAX {
        bail!("{} is {size} bytes; a component may be at most {}", path.display(), flumen_package::COMPONENT_BYTES_MAX);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn trusted_by(by: &TrustedBy) -> String {
    match by {
        TrustedBy::Key { name, key_id } => format!("signed by {name} ({key_id})"),
        TrustedBy::Unsigned => "not signed by a trusted key (accepted: unsigned packages are allowed)".to_owned(),
    }
}

/// `prefix` with `suffix` appended to its file name.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Runs a registry operation on a runtime of its own.
fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    Ok(runtime.block_on(future))
}
