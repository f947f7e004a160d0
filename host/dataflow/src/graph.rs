//! Job graphs: validation, topological order, pipelined regions and the
//! expansion of each edge into channels between subtasks.

use std::collections::HashMap;
use std::fmt::Write;

use flumen_types::{NodeId, Partitioning, SubtaskId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeKind::Source => "source",
            NodeKind::Operator => "operator",
            NodeKind::Sink => "sink",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    pub kind: NodeKind,
    pub parallelism: u32,
}

/// An edge from `from`'s output to input port `port` of `to` (indices into the node list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub port: u32,
    pub partitioning: Partitioning,
    /// A dead-letter edge carries only the batches an operator failed on.
    pub dead_letter: bool,
}

/// Why a graph cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("two nodes are named `{0}`; ids must be unique")]
    DuplicateId(NodeId),
    #[error("{kind} `{node}` reads from `{input}`, which is not a source or operator of this job")]
    UnknownInput { kind: NodeKind, node: NodeId, input: String },
    #[error("{kind} `{node}` has no inputs")]
    NoInputs { kind: NodeKind, node: NodeId },
    #[error("{kind} `{node}`'s output is not read by any operator or sink")]
    Unconsumed { kind: NodeKind, node: NodeId },
    /// `node` is the first of the cycle in spec order; `path` the cycle itself.
    #[error("`{node}` is on a cycle: {}", path.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" → "))]
    Cycle { node: NodeId, path: Vec<NodeId> },
    #[error("{node}: parallelism must be at least 1")]
    ZeroParallelism { node: NodeId },
    #[error(
        "edge {from} → {to} is `forward`, which needs equal parallelism on both ends ({from_p} vs {to_p}); use round-robin or hash"
    )]
    ForwardParallelism { from: NodeId, to: NodeId, from_p: u32, to_p: u32 },
    #[error("edge {from} → {to}: hash partitioning needs at least one key column")]
    NoHashKeys { from: NodeId, to: NodeId },
}

/// A validated job graph.
#[derive(Debug, Clone)]
pub struct LogicalGraph {
    nodes: Vec<NodeSpec>,
    edges: Vec<Edge>,
    topo: Vec<usize>,
}

/// The longest [`LogicalGraph::region_name`], in bytes (defined once, in
/// `flumen-types`, for the checkpoint store's check too).
pub use flumen_types::REGION_NAME_BYTES_MAX;

/// A set of nodes connected by pipelined edges: they checkpoint and recover together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub nodes: Vec<usize>,
}

/// One channel: a producer subtask's output to a consumer subtask's input port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub edge: usize,
    pub from: SubtaskId,
    pub to: SubtaskId,
}

/// Every subtask of every node and every channel between them.
#[derive(Debug, Clone)]
pub struct PhysicalPlan {
    pub subtasks: Vec<SubtaskId>,
    pub channels: Vec<ChannelSpec>,
}

impl LogicalGraph {
    /// Validates nodes and edges. Sources must have no inputs, operators and
    /// sinks at least one, every source and operator must be read, the graph
    /// must be acyclic and forward edges need equal parallelism.
    pub fn new(nodes: Vec<NodeSpec>, edges: Vec<Edge>) -> Result<Self, PlanError> {
        let mut seen = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if seen.insert(n.id.clone(), i).is_some() {
                return Err(PlanError::DuplicateId(n.id.clone()));
            }
            if n.parallelism == 0 {
                return Err(PlanError::ZeroParallelism { node: n.id.clone() });
            }
        }
        for e in &edges {
            let (from, to) = (&nodes[e.from], &nodes[e.to]);
            if from.kind == NodeKind::Sink {
                return Err(PlanError::UnknownInput { kind: to.kind, node: to.id.clone(), input: from.id.to_string() });
            }
            match &e.partitioning {
                Partitioning::Forward if from.parallelism != to.parallelism => {
                    return Err(PlanError::ForwardParallelism {
                        from: from.id.clone(),
                        to: to.id.clone(),
                        from_p: from.parallelism,
                        to_p: to.parallelism,
                    });
                }
                Partitioning::Hash(keys) if keys.is_empty() => {
                    return Err(PlanError::NoHashKeys { from: from.id.clone(), to: to.id.clone() });
                }
                _ => {}
            }
        }
        // The cause before its effects: a node with no inputs, then a cycle,
        // and only then a node nothing reads (which either may have cut off).
        for (i, n) in nodes.iter().enumerate() {
            if n.kind != NodeKind::Source && !edges.iter().any(|e| e.to == i) {
                return Err(PlanError::NoInputs { kind: n.kind, node: n.id.clone() });
            }
        }
        let topo = topological_order(&nodes, &edges)?;
        for (i, n) in nodes.iter().enumerate() {
            if n.kind != NodeKind::Sink && !edges.iter().any(|e| e.from == i && !e.dead_letter) {
                return Err(PlanError::Unconsumed { kind: n.kind, node: n.id.clone() });
            }
        }
        Ok(Self { nodes, edges, topo })
    }

    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Node indices, every producer before its consumers.
    pub fn topological_order(&self) -> &[usize] {
        &self.topo
    }

    /// Edges into `node`, ordered by port.
    pub fn inputs_of(&self, node: usize) -> Vec<(usize, &Edge)> {
        let mut v: Vec<_> = self.edges.iter().enumerate().filter(|(_, e)| e.to == node).collect();
        v.sort_by_key(|(_, e)| e.port);
        v
    }

    /// Edges out of `node`.
    pub fn outputs_of(&self, node: usize) -> Vec<(usize, &Edge)> {
        self.edges.iter().enumerate().filter(|(_, e)| e.from == node).collect()
    }

    /// Pipelined regions: connected components over pipelined edges. Every
    /// edge is pipelined today; blocking and service-style edges (later) split regions.
    pub fn regions(&self) -> Vec<Region> {
        let mut parent: Vec<usize> = (0..self.nodes.len()).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for e in &self.edges {
            let (a, b) = (find(&mut parent, e.from), find(&mut parent, e.to));
            parent[a] = b;
        }
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &n in &self.topo {
            let r = find(&mut parent, n);
            match groups.iter_mut().find(|(root, _)| *root == r) {
                Some((_, v)) => v.push(n),
                None => groups.push((r, vec![n])),
            }
        }
        groups.into_iter().map(|(_, nodes)| Region { nodes }).collect()
    }

    /// A stable, readable name for `region`, safe as a file or directory
    /// name (checkpoints of the region are stored under it): the ids of its
    /// sources, sorted and joined with `+`. Bytes other than ASCII letters,
    /// digits, `-` and `_` are written `%XX`, so distinct regions never share
    /// a name and none is `.`, `..` or holds a separator. A name longer than
    /// [`REGION_NAME_BYTES_MAX`] keeps its head and ends in `~` and a hash of
    /// the whole name. A region without sources (not one `regions` returns) is
    /// named after all its nodes.
    pub fn region_name(&self, region: &Region) -> String {
        let nodes: Vec<&NodeSpec> = region.nodes.iter().filter_map(|&n| self.nodes.get(n)).collect();
        let mut ids: Vec<&str> = nodes.iter().filter(|n| n.kind == NodeKind::Source).map(|n| n.id.as_str()).collect();
        if ids.is_empty() {
            ids = nodes.iter().map(|n| n.id.as_str()).collect();
        }
        ids.sort_unstable();
        let mut name = String::new();
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                name.push('+');
            }
            for b in id.bytes() {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    name.push(char::from(b));
                } else {
                    let _ = write!(name, "%{b:02X}");
                }
            }
        }
        if name.len() > REGION_NAME_BYTES_MAX {
            // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
            let hash =
                name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            // Every byte of `name` is ASCII, so any cut is a char boundary.
            name.truncate(REGION_NAME_BYTES_MAX - 17);
            let _ = write!(name, "~{hash:016x}");
        }
        name
    }

    /// Expands nodes into subtasks and edges into channels: forward edges
    /// connect subtask i to subtask i, every other partitioning connects every
    /// producer subtask to every consumer subtask.
    pub fn physical(&self) -> PhysicalPlan {
        let mut subtasks = Vec::new();
        for &n in &self.topo {
            let node = &self.nodes[n];
            subtasks.extend((0..node.parallelism).map(|i| SubtaskId { node: node.id.clone(), index: i }));
        }
        let mut channels = Vec::new();
        for (ei, e) in self.edges.iter().enumerate() {
            let (from, to) = (&self.nodes[e.from], &self.nodes[e.to]);
            for p in 0..from.parallelism {
                for c in 0..to.parallelism {
                    if e.partitioning == Partitioning::Forward && p != c {
                        continue;
                    }
                    channels.push(ChannelSpec {
                        edge: ei,
                        from: SubtaskId { node: from.id.clone(), index: p },
                        to: SubtaskId { node: to.id.clone(), index: c },
                    });
                }
            }
        }
        PhysicalPlan { subtasks, channels }
    }

    /// A human-readable plan: nodes in topological order with parallelism,
    /// their inputs with partitioning, and the pipelined regions.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for &n in &self.topo {
            let node = &self.nodes[n];
            let _ = write!(out, "{} {} ×{}", node.kind, node.id, node.parallelism);
            let inputs = self.inputs_of(n);
            if !inputs.is_empty() {
                let list: Vec<String> =
                    inputs.iter().map(|(_, e)| format!("{} ({})", self.nodes[e.from].id, e.partitioning)).collect();
                let _ = write!(out, " ← {}", list.join(", "));
            }
            out.push('\n');
        }
        for (i, r) in self.regions().iter().enumerate() {
            let names: Vec<String> = r.nodes.iter().map(|&n| self.nodes[n].id.to_string()).collect();
            let _ = writeln!(
                out,
                "region {i} `{}` (checkpoints and restarts on its own): {}",
                self.region_name(r),
                names.join(", ")
            );
        }
        out
    }
}

/// The cycle left after a topological sort stopped: every node still waiting
/// has an input from another waiting node, so walking inputs backwards from
/// one must come round to a node already seen, and what lies between is a
/// cycle. It is reported from its first node in spec order.
fn cycle_error(nodes: &[NodeSpec], edges: &[Edge], indegree: &[usize]) -> PlanError {
    let waiting = |i: usize| indegree[i] > 0;
    let Some(start) = (0..nodes.len()).find(|&i| waiting(i)) else {
        return PlanError::Cycle { node: nodes[0].id.clone(), path: vec![] };
    };
    let mut walk = vec![start];
    let mut at = start;
    let cycle = loop {
        let Some(prev) = edges.iter().find(|e| e.to == at && waiting(e.from)).map(|e| e.from) else {
            break vec![start];
        };
        if let Some(pos) = walk.iter().position(|&n| n == prev) {
            // walk[pos..] runs against the edges: reverse it into data-flow order.
            let mut c: Vec<usize> = walk[pos..].to_vec();
            c.reverse();
            break c;
        }
        walk.push(prev);
        at = prev;
    };
    let first = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap_or(0);
    let mut path: Vec<NodeId> = cycle[first..].iter().chain(&cycle[..first]).map(|&n| nodes[n].id.clone()).collect();
    let node = path.first().cloned().unwrap_or_else(|| nodes[start].id.clone());
    path.push(node.clone());
    PlanError::Cycle { node, path }
}

fn topological_order(nodes: &[NodeSpec], edges: &[Edge]) -> Result<Vec<usize>, PlanError> {
    let mut indegree = vec![0usize; nodes.len()];
    for e in edges {
        indegree[e.to] += 1;
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(n) = ready.pop() {
        order.push(n);
        for e in edges.iter().filter(|e| e.from == n) {
            indegree[e.to] -= 1;
            if indegree[e.to] == 0 {
                ready.insert(0, e.to);
            }
        }
    }
    if order.len() != nodes.len() {
        return Err(cycle_error(nodes, edges, &indegree));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind, p: u32) -> NodeSpec {
        NodeSpec { id: NodeId::new(id), kind, parallelism: p }
    }
    fn edge(from: usize, to: usize, partitioning: Partitioning) -> Edge {
        Edge { from, to, port: 0, partitioning, dead_letter: false }
    }

    fn linear(p: u32, part: Partitioning) -> Result<LogicalGraph, PlanError> {
        LogicalGraph::new(
            vec![node("src", NodeKind::Source, 1), node("op", NodeKind::Operator, p), node("out", NodeKind::Sink, 1)],
            vec![edge(0, 1, part), edge(1, 2, Partitioning::RoundRobin)],
        )
    }

    #[test]
    fn expands_all_to_all_and_forward() {
        let g = linear(3, Partitioning::RoundRobin).unwrap();
        let plan = g.physical();
        assert_eq!(plan.subtasks.len(), 5);
        assert_eq!(plan.channels.len(), 3 + 3);
        let g = LogicalGraph::new(
            vec![node("s", NodeKind::Source, 2), node("o", NodeKind::Operator, 2), node("k", NodeKind::Sink, 2)],
            vec![edge(0, 1, Partitioning::Forward), edge(1, 2, Partitioning::Forward)],
        )
        .unwrap();
        let plan = g.physical();
        assert_eq!(plan.channels.len(), 4);
        assert!(plan.channels.iter().all(|c| c.from.index == c.to.index));
    }

    #[test]
    fn forward_needs_equal_parallelism() {
        let err = linear(2, Partitioning::Forward).unwrap_err();
        assert!(err.to_string().contains("forward"), "{err}");
    }

    #[test]
    fn rejects_cycles_dangling_outputs_and_missing_inputs() {
        let cyc = LogicalGraph::new(
            vec![
                node("s", NodeKind::Source, 1),
                node("a", NodeKind::Operator, 1),
                node("b", NodeKind::Operator, 1),
                node("k", NodeKind::Sink, 1),
            ],
            vec![
                edge(0, 1, Partitioning::RoundRobin),
                edge(1, 2, Partitioning::RoundRobin),
                edge(2, 1, Partitioning::RoundRobin),
                edge(2, 3, Partitioning::RoundRobin),
            ],
        );
        assert_eq!(cyc.unwrap_err().to_string(), "`a` is on a cycle: `a` → `b` → `a`");
        // A cycle that cuts off the source: the cycle is the error, reported
        // at a node on it, not the source nothing reads.
        let cut_off = LogicalGraph::new(
            vec![
                node("s", NodeKind::Source, 1),
                node("a", NodeKind::Operator, 1),
                node("b", NodeKind::Operator, 1),
                node("c", NodeKind::Operator, 1),
                node("k", NodeKind::Sink, 1),
            ],
            vec![
                edge(3, 1, Partitioning::RoundRobin),
                edge(1, 2, Partitioning::RoundRobin),
                edge(2, 3, Partitioning::RoundRobin),
                edge(3, 4, Partitioning::RoundRobin),
            ],
        );
        assert_eq!(cut_off.unwrap_err().to_string(), "`a` is on a cycle: `a` → `b` → `c` → `a`");
        // An operator with no inputs is the error, not the source it leaves unread.
        let no_inputs = LogicalGraph::new(
            vec![node("s", NodeKind::Source, 1), node("a", NodeKind::Operator, 1), node("k", NodeKind::Sink, 1)],
            vec![edge(1, 2, Partitioning::RoundRobin)],
        );
        assert_eq!(no_inputs.unwrap_err().to_string(), "operator `a` has no inputs");
        let dangling = LogicalGraph::new(
            vec![node("s", NodeKind::Source, 1), node("a", NodeKind::Operator, 1)],
            vec![edge(0, 1, Partitioning::RoundRobin)],
        );
        assert_eq!(dangling.unwrap_err().to_string(), "operator `a`'s output is not read by any operator or sink");
        let orphan = LogicalGraph::new(vec![node("k", NodeKind::Sink, 1)], vec![]);
        assert_eq!(orphan.unwrap_err().to_string(), "sink `k` has no inputs");
        let dup = LogicalGraph::new(vec![node("x", NodeKind::Source, 1), node("x", NodeKind::Sink, 1)], vec![]);
        assert!(matches!(dup, Err(PlanError::DuplicateId(_))));
    }

    #[test]
    fn regions_are_connected_components() {
        let g = LogicalGraph::new(
            vec![
                node("s1", NodeKind::Source, 1),
                node("k1", NodeKind::Sink, 1),
                node("s2", NodeKind::Source, 1),
                node("o2", NodeKind::Operator, 1),
                node("k2", NodeKind::Sink, 1),
            ],
            vec![
                edge(0, 1, Partitioning::RoundRobin),
                edge(2, 3, Partitioning::RoundRobin),
                edge(3, 4, Partitioning::RoundRobin),
            ],
        )
        .unwrap();
        let regions = g.regions();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].nodes.len() + regions[1].nodes.len(), 5);
        let text = g.describe();
        assert!(text.contains("region 0 `") && text.contains("region 1 `"), "{text}");
        assert!(text.contains("operator o2 ×1 ← s2 (round-robin)"), "{text}");
    }

    #[test]
    fn region_names_are_sorted_source_ids_safe_for_file_names() {
        let g = LogicalGraph::new(
            vec![
                node("orders", NodeKind::Source, 1),
                node("a/b c", NodeKind::Source, 1),
                node("join", NodeKind::Operator, 2),
                node("out", NodeKind::Sink, 1),
                node("..", NodeKind::Source, 1),
                node("k2", NodeKind::Sink, 1),
            ],
            vec![
                edge(0, 2, Partitioning::RoundRobin),
                edge(1, 2, Partitioning::RoundRobin),
                edge(2, 3, Partitioning::RoundRobin),
                edge(4, 5, Partitioning::RoundRobin),
            ],
        )
        .unwrap();
        let mut names: Vec<String> = g.regions().iter().map(|r| g.region_name(r)).collect();
        names.sort();
        assert_eq!(names, ["%2E%2E", "a%2Fb%20c+orders"]);
        assert_eq!(g.region_name(&Region { nodes: vec![2, 3] }), "join+out", "no source: every node");

        let many: Vec<NodeSpec> = (0..40).map(|i| node(&format!("source_{i:02}"), NodeKind::Source, 1)).collect();
        let mut nodes = many.clone();
        nodes.push(node("k", NodeKind::Sink, 1));
        let edges = (0..40).map(|i| edge(i, 40, Partitioning::RoundRobin)).collect();
        let g = LogicalGraph::new(nodes, edges).unwrap();
        let long = g.region_name(&g.regions()[0]);
        assert_eq!(long.len(), REGION_NAME_BYTES_MAX, "{long}");
        assert!(long.starts_with("source_00+source_01+"), "{long}");
        assert_eq!(long, g.region_name(&g.regions()[0]), "stable");
        let mut shorter = g.regions()[0].clone();
        shorter.nodes.retain(|&n| n != 39);
        assert_ne!(g.region_name(&shorter), long, "the hash tells regions with the same head apart");
    }

    #[test]
    fn topological_order_puts_producers_first() {
        let g = linear(1, Partitioning::Forward).unwrap();
        assert_eq!(g.topological_order(), &[0, 1, 2]);
    }
}
