//! Preparing a job: spec → validated graph, plugins loaded and linked,
//! sources planned, every operator instance opened, and every schema agreed
//! before a single row flows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use flumen_blob::{BlobConfig, BlobStore};
use flumen_dataflow::{Edge, LogicalGraph, NodeKind, NodeSpec};
use flumen_types::{FailureAction, NodeId, Partitioning};
use flumen_wasm::{BlobScope, Capabilities, OpenContext, OperatorFactory, OperatorInstance};

use crate::{Engine, EngineError};
use flumen_connectors::{self as connector, PlannedSource, SinkSpec};
use flumen_spec::{JobSpec, SpecError};

/// Columns added to a batch sent to a dead-letter sink.
pub const DEAD_LETTER_OPERATOR_COLUMN: &str = "_flumen_operator";
pub const DEAD_LETTER_ERROR_COLUMN: &str = "_flumen_error";

/// A job ready to run: every instance open, every schema known.
#[derive(Debug)]
pub struct PreparedJob {
    pub(crate) spec: JobSpec,
    pub(crate) graph: LogicalGraph,
    pub(crate) nodes: Vec<PreparedNode>,
    pub(crate) metrics: Arc<crate::JobMetrics>,
    pub(crate) blobs: BlobStore,
    /// The job's model repository (`[inference]`), shared with the process.
    pub(crate) models: Option<Arc<flumen_inference::ModelHub>>,
    /// The engine's threads, which run the job.
    pub(crate) executors: Arc<crate::executor::Executors>,
    /// Compiles the versions a live upgrade brings.
    pub(crate) runtime: flumen_wasm::WasmRuntime,
}

#[derive(Debug)]
pub(crate) struct PreparedNode {
    pub(crate) id: NodeId,
    /// Schema of what the node emits (sources, operators) or accepts (sinks).
    pub(crate) schema: SchemaRef,
    pub(crate) role: Role,
    pub(crate) metrics: Arc<crate::NodeMetrics>,
}

// One per node, made once per run: the size of the operator variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Role {
    Source(Box<dyn PlannedSource>),
    Operator {
        factory: OperatorFactory,
        /// What checkpoints record of the version the spec names.
        version: crate::upgrade::VersionRecord,
        /// Its package's manifest, when the spec names a package.
        manifest: Option<Arc<flumen_package::Manifest>>,
        /// What the job grants it; an upgraded version links with the same.
        capabilities: flumen_wasm::Capabilities,
        instances: Vec<(OpenContext, OperatorInstance)>,
        policy: flumen_types::FailurePolicy,
        /// Granted `state`: gets a state store and takes part in checkpoints with it.
        stateful: bool,
    },
    Sink(SinkSpec),
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Source(_) => "Source",
            Role::Operator { .. } => "Operator",
            Role::Sink(_) => "Sink",
        })
    }
}

impl PreparedJob {
    pub fn name(&self) -> &str {
        &self.spec.job.name
    }

    /// The counters the running job will update; poll them for progress.
    pub fn metrics(&self) -> Arc<crate::JobMetrics> {
        self.metrics.clone()
    }

    /// The plan: nodes with parallelism and edges, regions, and each node's schema.
    pub fn describe(&self) -> String {
        let mut out = self.graph.describe();
        for n in &self.nodes {
            let cols: Vec<String> =
                n.schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
            out.push_str(&format!("schema {}: {}\n", n.id, cols.join(", ")));
        }
        for m in self.models.iter().flat_map(|h| h.used()) {
            out.push_str(&format!(
                "model {}: {} sha256:{} on {} ({}), max_batch {}, delay {} ms, {} instance(s){}\n",
                m.info.name,
                m.entry.config.file,
                m.entry.short_digest(),
                m.device,
                m.backend,
                m.entry.config.max_batch,
                m.entry.config.max_queue_delay_ms,
                m.entry.config.instances,
                m.fallback_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
            ));
        }
        out
    }

    /// The schema node `id` emits (sources, operators) or accepts (sinks).
    pub fn schema(&self, id: &str) -> Option<SchemaRef> {
        self.nodes.iter().find(|n| n.id.as_str() == id).map(|n| n.schema.clone())
    }

    /// The ids of the nodes of the pipelined regions named `regions` (as
    /// [`crate::RunOptions::regions`] names them): what a run of those regions runs.
    pub fn region_node_ids(&self, regions: &std::collections::BTreeSet<String>) -> std::collections::HashSet<String> {
        self.graph
            .regions()
            .iter()
            .filter(|r| regions.contains(&self.graph.region_name(r)))
            .flat_map(|r| r.nodes.iter().filter_map(|&n| self.graph.nodes().get(n)).map(|n| n.id.as_str().to_owned()))
            .collect()
    }
}

impl Engine {
    /// Loads, validates and opens the job at `path`. Every error names the
    /// file, the line of the node it concerns, and the node.
    pub async fn prepare(&self, path: &Path) -> Result<PreparedJob, EngineError> {
        let spec = JobSpec::load(path)?;
        let engine = self.clone();
        self.executors.spawn_io(async move { engine.prepare_spec(spec).await }).await?
    }

    pub(crate) async fn prepare_spec(&self, spec: JobSpec) -> Result<PreparedJob, EngineError> {
        let base = spec.base_dir();
        let graph = build_graph(&spec)?;
        let blobs = open_blob_store(&spec)?;
        let models = open_models(&spec)?;
        let n_sources = spec.sources.len();
        let n_ops = spec.operators.len();
        let mut schemas: Vec<Option<SchemaRef>> = vec![None; graph.nodes().len()];
        let mut roles: Vec<Option<Role>> = (0..graph.nodes().len()).map(|_| None).collect();

        for &n in graph.topological_order() {
            let node = &graph.nodes()[n];
            let at = |m: String| EngineError::Spec(spec.error_for(node.id.as_str(), m));
            let input_schemas = || -> Result<Vec<SchemaRef>, EngineError> {
                graph
                    .inputs_of(n)
                    .iter()
                    .filter(|(_, e)| !e.dead_letter)
                    .map(|(_, e)| {
                        schemas[e.from]
                            .clone()
                            .ok_or_else(|| EngineError::Internal("schema of an input is unknown".into()))
                    })
                    .collect()
            };
            match node.kind {
                NodeKind::Source => {
                    let s = &spec.sources[n];
                    let planned =
                        connector::plan_source(s, &base, spec.job.batch_rows, &blobs).map_err(|e| at(e.to_string()))?;
                    schemas[n] = Some(planned.schema());
                    roles[n] = Some(Role::Source(planned));
                }
                NodeKind::Operator => {
                    let op = &spec.operators[n - n_sources];
                    let inputs = input_schemas()?;
                    let (factory, (version, manifest), instances) =
                        self.open_operator(&spec, op, node, inputs, &blobs, &models).await?;
                    schemas[n] = Some(instances[0].1.output_schema().clone());
                    let capabilities = capabilities(op).map_err(at)?;
                    roles[n] = Some(Role::Operator {
                        factory,
                        version,
                        manifest,
                        capabilities,
                        instances,
                        policy: op.on_error.clone(),
                        stateful: capabilities.state,
                    });
                }
                NodeKind::Sink => {
                    let s = &spec.sinks[n - n_sources - n_ops];
                    connector::validate_sink(s).map_err(|e| at(e.to_string()))?;
                    let dead_letter_from: Vec<usize> =
                        graph.inputs_of(n).iter().filter(|(_, e)| e.dead_letter).map(|(_, e)| e.from).collect();
                    let schema = if dead_letter_from.is_empty() {
                        let inputs = input_schemas()?;
                        union_schema(&graph, n, &inputs).map_err(at)?
                    } else {
                        dead_letter_schema(&graph, &schemas, n, &dead_letter_from).map_err(at)?
                    };
                    schemas[n] = Some(schema);
                    roles[n] = Some(Role::Sink(s.clone()));
                }
            }
        }
        // Hash keys must exist in the producer's schema.
        for e in graph.edges() {
            if let Partitioning::Hash(keys) = &e.partitioning {
                let schema = schemas[e.from].as_ref().ok_or_else(|| EngineError::Internal("no schema".into()))?;
                for k in keys {
                    if schema.column_with_name(k).is_none() {
                        let to = &graph.nodes()[e.to].id;
                        return Err(EngineError::Spec(spec.error_for(
                            to.as_str(),
                            format!(
                                "hash key `{k}` on input `{}` is not a column of its output; columns are: {}",
                                graph.nodes()[e.from].id,
                                column_names(schema)
                            ),
                        )));
                    }
                }
            }
        }
        prune_sources(&graph, &schemas, &mut roles);
        let mut nodes = Vec::with_capacity(roles.len());
        for (i, (role, schema)) in roles.into_iter().zip(schemas).enumerate() {
            let (Some(role), Some(schema)) = (role, schema) else {
                return Err(EngineError::Internal(format!("node {i} was not planned")));
            };
            nodes.push(PreparedNode { id: graph.nodes()[i].id.clone(), schema, role, metrics: Default::default() });
        }
        let metrics = Arc::new(crate::JobMetrics {
            nodes: nodes.iter().zip(graph.nodes()).map(|(p, g)| (p.id.clone(), g.kind, p.metrics.clone())).collect(),
            regions: Default::default(),
            models: models.clone(),
        });
        Ok(PreparedJob {
            spec,
            graph,
            nodes,
            metrics,
            blobs,
            models,
            executors: self.executors.clone(),
            runtime: self.runtime.clone(),
        })
    }

    async fn open_operator(
        &self,
        spec: &JobSpec,
        op: &flumen_spec::OperatorSpec,
        node: &NodeSpec,
        inputs: Vec<SchemaRef>,
        blobs: &BlobStore,
        models: &Option<Arc<flumen_inference::ModelHub>>,
    ) -> Result<OpenedOperator, EngineError> {
        let at = |m: String| EngineError::Spec(spec.error_for(&op.id, m));
        let ResolvedPlugin { path, package } = self.resolve_plugin(spec, op).map_err(at)?;
        let component = tokio::task::block_in_place(|| self.runtime.load_component(&path))
            .map_err(|e| at(format!("operator `{}`: {e}", op.id)))?;
        let capabilities = capabilities(op).map_err(at)?;
        if let Some(m) = &package {
            check_package(m, &hex::encode(component.digest), capabilities, op).map_err(|e| match e {
                PackageProblem::Config(message) => EngineError::Spec(spec.config_error(op, &message)),
                PackageProblem::Other(message) => at(format!("operator `{}`: package {}: {message}", op.id, m.id())),
            })?;
        }
        let factory = OperatorFactory::new(&self.runtime, &component, &op.id, capabilities, op.limits.clone())
            .map_err(|e| at(format!("{e} ({})", path.display())))?;
        let config_json = match &op.config {
            Some(t) => {
                serde_json::to_string(t.get_ref()).map_err(|e| at(format!("operator `{}`: config: {e}", op.id)))?
            }
            None => "{}".to_string(),
        };
        let mut instances = Vec::with_capacity(node.parallelism as usize);
        for subtask in 0..node.parallelism {
            let ctx = OpenContext {
                operator_id: op.id.clone(),
                subtask,
                parallelism: node.parallelism,
                config_json: config_json.clone(),
                inputs: inputs.clone(),
                state: None,
                blobs: Some(BlobScope::new(std::sync::Arc::new(blobs.clone()))),
                inference: models
                    .as_ref()
                    .filter(|_| capabilities.inference)
                    .map(|m| Arc::clone(m) as Arc<dyn flumen_types::inference::InferenceService>),
            };
            let instance = factory.instantiate(&ctx).await.map_err(|e| {
                if e.kind == flumen_wasm::CallErrorKind::Guest(flumen_wasm::GuestErrorKind::InvalidConfig) {
                    EngineError::Spec(spec.config_error(op, &e.to_string()))
                } else {
                    at(e.to_string())
                }
            })?;
            if let Some((_, first)) = instances.first() {
                let first: &OperatorInstance = first;
                if first.output_schema() != instance.output_schema() {
                    return Err(at(format!("operator `{}`: its instances disagree on the output schema", op.id)));
                }
            }
            instances.push((ctx, instance));
        }
        let version = crate::upgrade::VersionRecord {
            plugin: match &package {
                // A package is recorded pinned, whatever requirement the spec wrote.
                Some(m) => format!(
                    "{}@{}",
                    m.name,
                    flumen_package::content_digest(flumen_package::package::manifest_to_canonical_json(m).as_bytes())
                ),
                None => op.plugin.clone(),
            },
            component: hex::encode(component.digest),
            config: config_json,
            path: std::path::absolute(&path).unwrap_or_else(|_| path.clone()).display().to_string(),
            rollback: None,
        };
        Ok((factory, (version, package), instances))
    }

    /// A plugin name is looked up in the plugin directories as `<name>.wasm`;
    /// anything with a `/` or ending in `.wasm` is a path relative to the job file;
    /// `name@version` or `name@sha256:…` is a package ([`Engine::resolve_package`]).
    fn resolve_plugin(&self, spec: &JobSpec, op: &flumen_spec::OperatorSpec) -> Result<ResolvedPlugin, String> {
        let p = &op.plugin;
        if p.contains('/') || p.ends_with(".wasm") {
            let path = spec.base_dir().join(p);
            return if path.is_file() {
                Ok(ResolvedPlugin { path, package: None })
            } else {
                Err(format!("operator `{}`: plugin file {} does not exist", op.id, path.display()))
            };
        }
        if p.contains('@') {
            return self.resolve_package(spec, op);
        }
        for dir in &self.options.plugin_dirs {
            let path = dir.join(format!("{p}.wasm"));
            if path.is_file() {
                return Ok(ResolvedPlugin { path, package: None });
            }
        }
        let mut available: Vec<String> = self
            .options
            .plugin_dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wasm").map(String::from))
            .collect();
        available.sort();
        available.dedup();
        Err(format!(
            "operator `{}`: no plugin named `{p}` in the plugin directories ({}); available: {}",
            op.id,
            self.options.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            if available.is_empty() { "none".to_string() } else { available.join(", ") }
        ))
    }

    /// A plugin named as a package: pinned by the lockfile beside the job
    /// (`flumen.lock`; a digest pins itself), read from the local store
    /// (which checks the component against the manifest's digest), and
    /// accepted by the trust policy — or refused, naming why.
    fn resolve_package(&self, spec: &JobSpec, op: &flumen_spec::OperatorSpec) -> Result<ResolvedPlugin, String> {
        use flumen_package::{Lockfile, PluginRef};
        let at = |e: String| format!("operator `{}`: plugin `{}`: {e}", op.id, op.plugin);
        let reference = PluginRef::parse(&op.plugin).map_err(|e| at(e.to_string()))?;
        let Some(packages) = &self.options.packages else {
            return Err(at("names a package, but this engine has no package store".into()));
        };
        let lock_path = spec.base_dir().join(flumen_package::lock::LOCKFILE_NAME);
        let lock = if lock_path.is_file() {
            Lockfile::read(&lock_path).map_err(|e| at(e.to_string()))?
        } else {
            Lockfile::default()
        };
        let pinned = lock.pin(&reference).map_err(|e| at(e.to_string()))?;
        let store = flumen_package::DirRegistry::open(&packages.store).map_err(|e| at(e.to_string()))?;
        let package = tokio::task::block_in_place(|| store.by_digest(&pinned.digest)).map_err(|e| {
            at(format!(
                "{e} (pinned to {}); pull it into the local store with `flumen plugin pull` or `flumen lock`",
                pinned.digest
            ))
        })?;
        if package.manifest().name != pinned.name {
            return Err(at(format!("the package pinned as {} is named `{}`", pinned.digest, package.manifest().name)));
        }
        packages.trust.check(&package).map_err(|e| at(format!("refused by the trust policy: {e}")))?;
        let m = package.manifest();
        let path = store.root().join(&m.name).join(m.version.to_string()).join(flumen_package::package::COMPONENT_FILE);
        Ok(ResolvedPlugin { path, package: Some(std::sync::Arc::new(package.manifest().clone())) })
    }
}

/// The job's blob store: checkpointed jobs keep their key and the blobs their
/// checkpoints pin in `<checkpoint dir>/.blobs` (a name no region can have:
/// region names escape dots), so references survive a restart. The store
/// spills into a directory of its own inside `spill_dir` (the configured one,
/// else beside the checkpoints, else the system temporary directory).
fn open_blob_store(spec: &JobSpec) -> Result<BlobStore, EngineError> {
    let durable_dir = spec.checkpoint_dir().map(|d| d.join(".blobs"));
    let spill_dir = match (&spec.blobs.spill_dir, spec.checkpoint_dir()) {
        (Some(d), _) => spec.base_dir().join(d),
        (None, Some(d)) => d.join(".blobs-spill"),
        (None, None) => std::env::temp_dir(),
    };
    let config = BlobConfig { memory_budget: spec.blobs.memory_mb.saturating_mul(1 << 20), spill_dir, durable_dir };
    BlobStore::new(config).map_err(|e| {
        EngineError::Spec(SpecError { path: spec.path.clone(), line: None, message: format!("[blobs]: {e}") })
    })
}

/// The job's model repository, when it has an `[inference]` table; every
/// operator granted `inference` needs one, and ONNX Runtime must be on the
/// machine: both are checked here, at plan time.
fn open_models(spec: &JobSpec) -> Result<Option<Arc<flumen_inference::ModelHub>>, EngineError> {
    let granted: Vec<&str> = spec
        .operators
        .iter()
        .filter(|op| op.capabilities.as_ref().is_some_and(|c| c.iter().any(|c| c == "inference")))
        .map(|op| op.id.as_str())
        .collect();
    let Some(section) = &spec.inference else {
        return match granted.first() {
            None => Ok(None),
            Some(id) => Err(EngineError::Spec(spec.error_for(
                id,
                format!(
                    "operator `{id}` is granted `inference` but the job has no model repository; add \
                     `[inference]` with `models = \"<dir>\"` (one folder per model)"
                ),
            ))),
        };
    };
    let at = |message: String| {
        let line = spec.text.lines().position(|l| l.trim() == "[inference]").map(|i| i + 1);
        EngineError::Spec(SpecError { path: spec.path.clone(), line, message: format!("[inference]: {message}") })
    };
    let runtime = section.runtime.as_ref().map(|r| spec.base_dir().join(r));
    if !granted.is_empty() {
        // Fails now, with how to install it, rather than at the first call.
        flumen_ort::OrtBackend::load(runtime.as_deref()).map_err(|e| at(e.to_string()))?;
    }
    let provider = crate::models::backends(runtime);
    let threads = section
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut hub = flumen_inference::ModelHub::open(&spec.base_dir().join(&section.models), provider, threads)
        .map_err(|e| at(e.to_string()))?;
    // Memos of models with `memo = true` live beside the checkpoints, so a
    // resumed run finds what the killed one inferred.
    if let Some(dir) = spec.checkpoint_dir() {
        hub = hub.with_memo_dir(dir.join(".memo"));
    }
    Ok(Some(Arc::new(hub)))
}

fn capabilities(op: &flumen_spec::OperatorSpec) -> Result<Capabilities, String> {
    let Some(list) = &op.capabilities else { return Ok(Capabilities::default()) };
    let mut caps = Capabilities { log: false, state: false, blobs: false, inference: false };
    for c in list {
        match c.as_str() {
            "log" => caps.log = true,
            "state" => caps.state = true,
            "blobs" => caps.blobs = true,
            "inference" => caps.inference = true,
            other => {
                let known: Vec<&str> = flumen_wasm::CAPABILITIES.iter().map(|(n, _)| *n).collect();
                return Err(format!("operator `{}`: unknown capability `{other}`; known: {}", op.id, known.join(", ")));
            }
        }
    }
    Ok(caps)
}

/// The job's dataflow graph from its spec alone (no plugin loaded, no file
/// read): what a cluster coordinator needs to split a job into pipelined
/// regions and place them. Errors as `prepare` reports them.
pub fn job_graph(spec: &JobSpec) -> Result<LogicalGraph, EngineError> {
    build_graph(spec)
}

/// Builds the graph: sources, then operators, then sinks, in spec order; each
/// `inputs` entry of a node is one input port, in order.
fn build_graph(spec: &JobSpec) -> Result<LogicalGraph, EngineError> {
    let mut nodes = Vec::new();
    for s in &spec.sources {
        nodes.push(NodeSpec {
            id: NodeId::new(&s.id),
            kind: NodeKind::Source,
            parallelism: spec.parallelism(s.parallelism),
        });
    }
    for o in &spec.operators {
        nodes.push(NodeSpec {
            id: NodeId::new(&o.id),
            kind: NodeKind::Operator,
            parallelism: spec.parallelism(o.parallelism),
        });
    }
    for s in &spec.sinks {
        // Console output from several subtasks would interleave.
        let p = if s.kind == connector::SinkKind::Console { 1 } else { spec.parallelism(s.parallelism) };
        nodes.push(NodeSpec { id: NodeId::new(&s.id), kind: NodeKind::Sink, parallelism: p });
    }
    let index = |id: &str| nodes.iter().position(|n: &NodeSpec| n.id.as_str() == id);
    let mut edges = Vec::new();
    let consumers = spec
        .operators
        .iter()
        .map(|o| (o.id.as_str(), &o.inputs))
        .chain(spec.sinks.iter().map(|s| (s.id.as_str(), &s.inputs)));
    for (id, inputs) in consumers {
        let to = index(id).ok_or_else(|| EngineError::Internal(format!("node `{id}` vanished")))?;
        for (port, input) in inputs.iter().enumerate() {
            let at = |m: String| EngineError::Spec(spec.error_for(id, m));
            let from = index(input.from()).ok_or_else(|| {
                at(format!(
                    "{} `{id}` reads from `{}`, which is not a source or operator of this job",
                    nodes[to].kind,
                    input.from()
                ))
            })?;
            let partitioning = input
                .partitioning(nodes[from].parallelism, nodes[to].parallelism)
                .map_err(|m| at(format!("`{id}`: {m}")))?;
            edges.push(Edge { from, to, port: port as u32, partitioning, dead_letter: false });
        }
    }
    // Operators' failure policies, and those of sources that have one (blobs).
    let policies = spec
        .operators
        .iter()
        .map(|o| ("operator", o.id.as_str(), Some(&o.on_error)))
        .chain(spec.sources.iter().map(|s| ("source", s.id.as_str(), s.on_error.as_ref())));
    for (what, id, policy) in policies {
        let Some(policy) = policy else { continue };
        if policy.then != FailureAction::DeadLetter {
            continue;
        }
        let at = |m: String| EngineError::Spec(spec.error_for(id, m));
        let Some(dl) = &policy.dead_letter else {
            return Err(at(format!(
                "{what} `{id}`: on_error.then = \"dead-letter\" needs `dead_letter = \"<sink id>\"`"
            )));
        };
        let from = index(id).ok_or_else(|| EngineError::Internal(format!("{what} vanished")))?;
        let to = index(dl.as_str())
            .filter(|&i| nodes[i].kind == NodeKind::Sink)
            .ok_or_else(|| at(format!("{what} `{id}`: dead-letter sink `{dl}` is not a sink of this job")))?;
        if spec.sinks.iter().any(|s| s.id == dl.as_str() && !s.inputs.is_empty()) {
            return Err(at(format!("sink `{dl}` is a dead-letter sink, so it must not list `inputs`")));
        }
        edges.push(Edge { from, to, port: 0, partitioning: Partitioning::RoundRobin, dead_letter: true });
    }
    LogicalGraph::new(nodes, edges).map_err(|e| {
        let id = match &e {
            flumen_dataflow::PlanError::DuplicateId(id)
            | flumen_dataflow::PlanError::NoInputs { node: id, .. }
            | flumen_dataflow::PlanError::Unconsumed { node: id, .. }
            | flumen_dataflow::PlanError::UnknownInput { node: id, .. }
            | flumen_dataflow::PlanError::ZeroParallelism { node: id }
            | flumen_dataflow::PlanError::Cycle { node: id, .. } => Some(id.clone()),
            flumen_dataflow::PlanError::ForwardParallelism { to, .. }
            | flumen_dataflow::PlanError::NoHashKeys { to, .. } => Some(to.clone()),
        };
        match id {
            Some(id) => EngineError::Spec(spec.error_for(id.as_str(), e.to_string())),
            None => EngineError::Spec(SpecError { path: spec.path.clone(), line: None, message: e.to_string() }),
        }
    })
}

/// A sink reading several inputs writes their union: they must agree on the schema.
fn union_schema(graph: &LogicalGraph, sink: usize, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
    let first = inputs.first().ok_or_else(|| "sink has no inputs".to_string())?;
    let names: Vec<_> = graph.inputs_of(sink).iter().map(|(_, e)| graph.nodes()[e.from].id.clone()).collect();
    for (s, name) in inputs.iter().zip(&names).skip(1) {
        if s.fields() != first.fields() {
            return Err(format!(
                "sink `{}` reads `{}` and `{name}`, whose schemas differ: ({}) vs ({})",
                graph.nodes()[sink].id,
                names[0],
                describe_fields(first),
                describe_fields(s)
            ));
        }
    }
    Ok(first.clone())
}

fn dead_letter_schema(
    graph: &LogicalGraph,
    schemas: &[Option<SchemaRef>],
    sink: usize,
    from: &[usize],
) -> Result<SchemaRef, String> {
    let mut result: Option<SchemaRef> = None;
    for &op in from {
        let inputs: Vec<_> = graph.inputs_of(op).iter().filter(|(_, e)| !e.dead_letter).map(|(_, e)| e.from).collect();
        // A source dead-letters rows of its own schema.
        let inputs = if graph.nodes()[op].kind == NodeKind::Source { vec![op] } else { inputs };
        let [input] = inputs[..] else {
            return Err(format!(
                "operator `{}` has several inputs, so it cannot dead-letter its batches",
                graph.nodes()[op].id
            ));
        };
        let input_schema = schemas[input].clone().ok_or("schema unknown")?;
        let schema = dead_letter_schema_for(&input_schema);
        if let Some(r) = &result
            && r.fields() != schema.fields()
        {
            return Err(format!(
                "dead-letter sink `{}` receives batches of different schemas: ({}) vs ({})",
                graph.nodes()[sink].id,
                describe_fields(r),
                describe_fields(&schema)
            ));
        }
        result = Some(schema);
    }
    result.ok_or_else(|| "no dead-letter input".into())
}

/// The schema of dead-lettered batches of an operator whose input is `input`:
/// the input's columns, then the operator and the error.
pub(crate) fn dead_letter_schema_for(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(DEAD_LETTER_OPERATOR_COLUMN, DataType::Utf8, false)));
    fields.push(Arc::new(Field::new(DEAD_LETTER_ERROR_COLUMN, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

pub(crate) fn column_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

fn describe_fields(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// Pushes what every node reads back to the sources: walks the graph from
/// the sinks up, marking the output columns of each node that some consumer
/// needs (sinks and dead-letter sinks need every column, hash edges their
/// keys, operators the columns they read plus those they carry into a needed
/// output), and tells each source which of its columns are needed, so that
/// it may skip decoding the others.
fn prune_sources(graph: &LogicalGraph, schemas: &[Option<SchemaRef>], roles: &mut [Option<Role>]) {
    let width = |n: usize| schemas[n].as_ref().map_or(0, |s| s.fields().len());
    let mut needed: Vec<Vec<bool>> = (0..graph.nodes().len()).map(|n| vec![false; width(n)]).collect();
    let mark_all = |needed: &mut Vec<Vec<bool>>, n: usize| needed[n].iter_mut().for_each(|f| *f = true);
    for &n in graph.topological_order().iter().rev() {
        for (_, e) in graph.inputs_of(n) {
            if e.dead_letter {
                // The failed rows of `e.from` are its input rows, whole.
                mark_all(&mut needed, e.from);
                for (_, into) in graph.inputs_of(e.from) {
                    mark_all(&mut needed, into.from);
                }
                continue;
            }
            match roles[n].as_ref() {
                Some(Role::Operator { instances, .. }) => match instances.first() {
                    Some((_, instance)) => {
                        let need = instance.input_needed(e.port, width(e.from), &needed[n]);
                        for (have, want) in needed[e.from].iter_mut().zip(need) {
                            *have |= want;
                        }
                    }
                    None => mark_all(&mut needed, e.from),
                },
                _ => mark_all(&mut needed, e.from),
            }
            if let Partitioning::Hash(keys) = &e.partitioning
                && let Some(schema) = &schemas[e.from]
            {
                for k in keys {
                    if let Some((i, _)) = schema.column_with_name(k) {
                        needed[e.from][i] = true;
                    }
                }
            }
        }
    }
    for (n, role) in roles.iter_mut().enumerate() {
        if let Some(Role::Source(source)) = role {
            let schema = source.schema();
            let read: Vec<&str> = schema
                .fields()
                .iter()
                .zip(&needed[n])
                .filter(|(_, need)| **need)
                .map(|(f, _)| f.name().as_str())
                .collect();
            if read.len() < schema.fields().len() {
                tracing::info!(
                    source = graph.nodes()[n].id.as_str(),
                    "consumers read {} of {} columns: {}",
                    read.len(),
                    schema.fields().len(),
                    read.join(", ")
                );
            }
            source.prune(&needed[n]);
        }
    }
}

/// An operator's factory, its version (and package manifest), and its instances.
type OpenedOperator = (
    OperatorFactory,
    (crate::upgrade::VersionRecord, Option<Arc<flumen_package::Manifest>>),
    Vec<(OpenContext, OperatorInstance)>,
);

/// Where a plugin's component is, and its package's manifest when it is one.
struct ResolvedPlugin {
    path: PathBuf,
    package: Option<std::sync::Arc<flumen_package::Manifest>>,
}

enum PackageProblem {
    /// The operator's config breaks the package's schema (located at the config's line).
    Config(String),
    Other(String),
}

/// A package's promises against what was loaded and granted: the component
/// is the one the manifest names (it may have changed on disk since the store
/// checked it), the job grants every capability it declares, and the
/// operator's config satisfies its schema.
fn check_package(
    m: &flumen_package::Manifest,
    component_hex: &str,
    granted: flumen_wasm::Capabilities,
    op: &flumen_spec::OperatorSpec,
) -> Result<(), PackageProblem> {
    if flumen_package::digest::digest_hex(&m.component.digest) != Some(component_hex) {
        return Err(PackageProblem::Other(format!(
            "its component file is sha256:{component_hex}, not {} as the manifest says",
            m.component.digest
        )));
    }
    let missing = ungranted(m, granted);
    if !missing.is_empty() {
        return Err(PackageProblem::Other(format!(
            "needs the capabilities {}, which the job does not grant (add them to `capabilities`)",
            missing.join(", ")
        )));
    }
    let config = match &op.config {
        Some(t) => serde_json::to_value(t.get_ref()).map_err(|e| PackageProblem::Other(format!("config: {e}")))?,
        None => serde_json::Value::Object(Default::default()),
    };
    m.check_config(&config).map_err(|e| PackageProblem::Config(e.to_string()))
}

/// The capabilities package `m` declares that `granted` leaves out.
pub(crate) fn ungranted(m: &flumen_package::Manifest, granted: flumen_wasm::Capabilities) -> Vec<&'static str> {
    m.capabilities
        .iter()
        .map(|c| c.as_str())
        .filter(|c| match *c {
            "log" => !granted.log,
            "state" => !granted.state,
            "blobs" => !granted.blobs,
            "inference" => !granted.inference,
            _ => true,
        })
        .collect()
}
