//! `flumen certs`: a cluster CA and node certificates for mutual TLS between nodes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flumen_transport::NodeIdentity;
use flumen_transport::certs::{NODE_VALIDITY_DAYS_DEFAULT, write_cluster_dir};

/// The arguments of `flumen certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Where to write `ca.pem`, `ca.key` and `<node>.pem`/`<node>.key` (keys 0600).
    /// A directory that already has `ca.pem` and `ca.key` keeps its CA: the new
    /// node certificates join the same cluster.
    #[arg(long)]
    dir: PathBuf,
    /// Node ids, comma-separated (lowercase letters, digits, '-'), e.g. coordinator,worker-1.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// How long the node certificates are valid, in days.
    #[arg(long, default_value_t = NODE_VALIDITY_DAYS_DEFAULT)]
    days: u32,
}

/// Writes the certificates and says what it wrote.
pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let nodes = match args.nodes.iter().map(|n| NodeIdentity::new(n.trim())).collect::<Result<Vec<_>, _>>() {
        Ok(nodes) => nodes,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let created = write_cluster_dir(&args.dir, &nodes, args.days)
        .with_context(|| format!("writing certificates into {}", args.dir.display()))?;
    let ca = if created { "created a cluster CA (ca.pem, ca.key)" } else { "reused the cluster CA" };
    println!("{}: {ca}", args.dir.display());
    for node in &nodes {
        println!("  {node}: {node}.pem, {node}.key (as {}, {} days)", node.dns_name(), args.days);
    }
    println!("Give each node ca.pem and its own pair; keep ca.key off the workers.");
    Ok(ExitCode::SUCCESS)
}
