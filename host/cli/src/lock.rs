//! `flumen lock <job>`: pins every package a job names by version
//! requirement to one package digest in `flumen.lock` beside the job; and the
//! steps before a run or an upgrade that make pinned packages local.
//!
//! A job that names `upper@^1` runs only through its lock entry (a tag alone
//! could point at other bytes tomorrow); `upper@sha256:…` pins itself. Every
//! package passes the trust policy when it is pulled and again when the
//! engine loads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use flumen_package::{DirRegistry, LockedPackage, Lockfile, Package, PluginRef, TrustPolicy};

use crate::packages::{self, Source};

/// `flumen lock` arguments.
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// The job spec (TOML); the lockfile is written beside it.
    pub job: PathBuf,
    /// Where to resolve versions and pull packages from (a directory
    /// registry, or `oci://host[:port]/namespace`); default: the local store.
    #[arg(long)]
    pub registry: Option<String>,
    /// Resolve every requirement again, even those the lockfile already pins.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Which keys to trust.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// The trust file (default: $FLUMEN_TRUST, else ~/.config/flumen/trust.toml if it exists;
    /// with none, nothing is trusted).
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Development only: accept packages no trusted key signed (also FLUMEN_ALLOW_UNSIGNED=1).
    /// Altered packages are refused all the same.
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    pub fn policy(&self) -> anyhow::Result<TrustPolicy> {
        packages::trust_policy(self.trust.as_deref(), self.allow_unsigned)
    }
}

pub async fn lock(args: LockArgs) -> anyhow::Result<()> {
    let spec = flumen_spec::JobSpec::load(&args.job).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lock_path = spec.base_dir().join(flumen_package::lock::LOCKFILE_NAME);
    let mut lock = if lock_path.is_file() { Lockfile::read(&lock_path)? } else { Lockfile::default() };
    let trust = args.trust.policy()?;
    let source = match &args.registry {
        Some(s) => Source::parse(s)?,
        None => Source::default(),
    };
    let store = DirRegistry::open(&packages::store_dir())?;
    let mut kept = Vec::new();
    for op in &spec.operators {
        if !op.plugin.contains('@') || op.plugin.contains('/') {
            continue;
        }
        let reference =
            PluginRef::parse(&op.plugin).with_context(|| format!("operator `{}`: plugin `{}`", op.id, op.plugin))?;
        match &reference {
            PluginRef::Version { name, requirement, text } => {
                if !args.update
                    && let Some(entry) = lock.find(name, text)
                    && store.by_digest(&entry.digest).is_ok()
                {
                    println!("{}: {name}@{text} → {} {} (locked)", op.id, entry.version, entry.digest);
                    kept.push((name.clone(), text.clone()));
                    continue;
                }
                let versions = packages::versions(&source, name).await?;
                let Some(version) = versions.iter().filter(|v| requirement.matches(v)).max().cloned() else {
                    bail!(
                        "operator `{}`: no version of `{name}` in {source} matches `{text}` (it has: {})",
                        op.id,
                        if versions.is_empty() {
                            "none".to_string()
                        } else {
                            versions.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                        }
                    );
                };
                let pkg = packages::pull(&source, name, &version, &trust)
                    .await
                    .with_context(|| format!("operator `{}`: pulling {name}@{version} from {source}", op.id))?;
                println!("{}: {name}@{text} → {version} {}", op.id, pkg.digest());
                lock.upsert(LockedPackage {
                    name: name.clone(),
                    requirement: text.clone(),
                    version,
                    digest: pkg.digest().to_string(),
                    source: source.to_string(),
                });
                kept.push((name.clone(), text.clone()));
            }
            PluginRef::Digest { name, digest } => {
                let pkg = store.by_digest(digest).with_context(|| {
                    format!("operator `{}`: {name}@{digest} is not in the local store (pull it first)", op.id)
                })?;
                trust.check(&pkg).with_context(|| format!("operator `{}`: {}", op.id, pkg.id()))?;
                println!("{}: {name}@{digest} (pinned by digest)", op.id);
            }
            PluginRef::Bare(_) => {}
        }
    }
    // Entries no operator names any more go.
    lock.packages.retain(|p| kept.iter().any(|(n, r)| *n == p.name && *r == p.requirement));
    lock.write(&lock_path)?;
    println!("wrote {}", lock_path.display());
    Ok(())
}

/// Before a run: pulls every package the job's lockfile pins that the local
/// store lacks, from the source it was locked from (its digest must match).
pub async fn pull_locked(job: &Path, trust: &TrustPolicy) -> anyhow::Result<()> {
    let Ok(spec) = flumen_spec::JobSpec::load(job) else { return Ok(()) };
    let lock_path = spec.base_dir().join(flumen_package::lock::LOCKFILE_NAME);
    if !lock_path.is_file() {
        return Ok(());
    }
    let lock = Lockfile::read(&lock_path)?;
    let store = DirRegistry::open(&packages::store_dir())?;
    for entry in &lock.packages {
        if store.by_digest(&entry.digest).is_ok() {
            continue;
        }
        let source = Source::parse(entry.source.strip_prefix("dir:").unwrap_or(&entry.source))
            .with_context(|| format!("{}: the source of {}@{}", lock_path.display(), entry.name, entry.version))?;
        eprintln!("pulling {}@{} from {source} (pinned in {})…", entry.name, entry.version, lock_path.display());
        let pkg = packages::pull(&source, &entry.name, &entry.version, trust).await?;
        if pkg.digest() != entry.digest {
            bail!(
                "{}@{} from {source} is {}, but {} pins {}: the published package changed; run `flumen lock --update` \
                 only if you trust the new one",
                entry.name,
                entry.version,
                pkg.digest(),
                lock_path.display(),
                entry.digest
            );
        }
    }
    Ok(())
}

/// The package an upgrade's `--to name@version` (or `name@sha256:…`) names,
/// from the local store, checked by the trust policy.
pub fn upgrade_package(reference: &PluginRef, trust: &TrustPolicy) -> anyhow::Result<(PathBuf, String, Package)> {
    let store = DirRegistry::open(&packages::store_dir())?;
    let pkg = match reference {
        PluginRef::Version { name, requirement, text } => {
            let Some(version) = store.resolve(name, requirement)? else {
                bail!("no version of `{name}` matching `{text}` in the local store: `flumen plugin pull` it first");
            };
            store.get(name, &version)?
        }
        PluginRef::Digest { digest, .. } => store.by_digest(digest)?,
        PluginRef::Bare(name) => bail!("`{name}` names no version: write `{name}@<version>`"),
    };
    trust.check(&pkg).with_context(|| format!("{} is refused by the trust policy", pkg.id()))?;
    let m = pkg.manifest();
    let path = store.root().join(&m.name).join(m.version.to_string()).join(flumen_package::package::COMPONENT_FILE);
    let pinned = format!("{}@{}", m.name, pkg.digest());
    Ok((path, pinned, pkg))
}

/// The engine's view of packages: the local store and the trust policy.
pub fn engine_packages(trust: &TrustArgs) -> anyhow::Result<flumen_engine::PackageOptions> {
    Ok(flumen_engine::PackageOptions { store: packages::store_dir(), trust: Arc::new(trust.policy()?) })
}
