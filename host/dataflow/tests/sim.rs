//! Deterministic simulation of one pipelined region checkpointing through
//! seeded message delays, declines, timeouts and crashes, for each alignment
//! mode: two replayable sources → hash → two keyed counting operators → one
//! sink with two-phase commit, driven only through the public sans-IO API
//! (`BarrierAligner`, `InputTracker`, `Coordinator`).
//!
//! The oracle, checked once the region has finished and committed after its
//! last crash: every record is committed exactly once, per key in order, with
//! the running count the operator attached equal to `seq + 1` (so operator
//! state was restored exactly once too), and the sink committed only
//! transactions listed in a durable manifest.
//!
//! `FLUMEN_SIM_SEEDS=N` runs N seeds per mode (default 300);
//! `FLUMEN_SIM_SEED=S` replays seed S alone and prints its event trace if it fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use flumen_dataflow::{
    AlignAction, AlignmentMode, BarrierAligner, CoordAction, Coordinator, CoordinatorConfig, DataAction, Event,
    InputTracker,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SOURCES: usize = 2;
const OPERATORS: usize = 2;
const SEEDS_DEFAULT: u64 = 300;
/// Events one seed may take before the run counts as stuck (a liveness failure).
const EVENTS_MAX: usize = 200_000;
const CRASHES_MAX: u32 = 3;
const TICK_MS: u64 = 5;
const SINK: &str = "sink[0]";

#[test]
fn aligned() {
    run_mode("aligned", |_| AlignmentMode::Aligned);
}

#[test]
fn unaligned() {
    run_mode("unaligned", |_| AlignmentMode::Unaligned);
}

#[test]
fn aligned_with_timeout() {
    run_mode("aligned_with_timeout", |rng| AlignmentMode::AlignedWithTimeout { timeout_ms: rng.random_range(0..=12) });
}

/// Runs every seed of one mode; `mode` draws the mode's parameters from the seed's generator.
fn run_mode(test: &str, mode: fn(&mut SmallRng) -> AlignmentMode) {
    let env = |name| std::env::var(name).ok().and_then(|v: String| v.parse::<u64>().ok());
    let replay =
        |seed| format!("replay: FLUMEN_SIM_SEED={seed} cargo test -p flumen-dataflow --test sim -- --exact {test}");
    if let Some(seed) = env("FLUMEN_SIM_SEED") {
        match Sim::new(seed, mode, true).run() {
            Ok(c) => eprintln!("{test}: seed {seed} passed: {c:?}"),
            Err(e) => panic!("simulation failed: mode {test}, seed {seed}: {e}"),
        }
        return;
    }
    let seeds = env("FLUMEN_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let mut total = Coverage::default();
    for seed in 0..seeds {
        match catch_unwind(AssertUnwindSafe(|| Sim::new(seed, mode, false).run())) {
            Ok(Ok(c)) => total.add(&c),
            Ok(Err(e)) => panic!("simulation failed: mode {test}, seed {seed}: {e}\n{}", replay(seed)),
            Err(_) => panic!("simulation panicked (message above): mode {test}, seed {seed}\n{}", replay(seed)),
        }
    }
    eprintln!("{test}: {seeds} seeds passed: {total:?}");
    if seeds >= 100 {
        total.check(test);
    }
}

/// Most channels are quick; about one in three is slow, so alignment takes
/// real time and barriers of consecutive checkpoints overtake each other's alignment.
fn channel_delay_max_ms(rng: &mut SmallRng) -> u64 {
    if rng.random_bool(0.3) { rng.random_range(5..=30) } else { rng.random_range(0..=5) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    key: u32,
    seq: u32,
}

/// What the operator emits: the record and its key's running count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Out {
    key: u32,
    seq: u32,
    count: u64,
}

/// What a participant acknowledges a checkpoint with; a manifest holds one per participant.
#[derive(Clone, Debug)]
enum Ack {
    Source { offset: usize },
    Operator { counts: BTreeMap<u32, u64>, inflight: Vec<Rec> },
    Sink { txns: Vec<u64>, inflight: Vec<Out> },
}

type Manifest = BTreeMap<String, Ack>;

/// What survives a crash: the inputs, the manifests written, and the sink's
/// external system (staged and committed transactions, committed output).
#[derive(Default)]
struct Durable {
    inputs: Vec<Vec<Rec>>,
    manifests: BTreeMap<u64, Manifest>,
    staged: BTreeMap<u64, Vec<Out>>,
    committed: BTreeSet<u64>,
    output: Vec<Out>,
}

/// A FIFO channel; each message carries the virtual time it arrives.
struct Channel<T> {
    queue: VecDeque<(u64, Event<T>)>,
    last_arrival: u64,
    /// This channel's latency bound: some channels are much slower than others.
    delay_max_ms: u64,
}

impl<T> Channel<T> {
    fn new(delay_max_ms: u64) -> Self {
        Self { queue: VecDeque::new(), last_arrival: 0, delay_max_ms }
    }
}

/// A snapshot being taken: its state, and the in-flight data recorded until `Complete`.
struct Snap<S, T> {
    checkpoint: u64,
    state: S,
    inflight: Vec<T>,
}

struct Source {
    offset: usize,
    ended: bool,
}

struct Operator {
    counts: BTreeMap<u32, u64>,
    inputs: Vec<Channel<Rec>>,
    tracker: InputTracker,
    aligner: BarrierAligner,
    snapshot: Option<Snap<BTreeMap<u32, u64>, Rec>>,
    timer: Option<u64>,
}

struct Sink {
    /// Records since the last pre-commit: in memory, lost on a crash.
    pending: Vec<Out>,
    /// Staged transactions not known to be committed, oldest first.
    uncommitted: Vec<u64>,
    inputs: Vec<Channel<Out>>,
    tracker: InputTracker,
    aligner: BarrierAligner,
    snapshot: Option<Snap<Vec<u64>, Out>>,
    timer: Option<u64>,
}

/// Everything a crash loses.
struct Live {
    sources: Vec<Source>,
    operators: Vec<Operator>,
    sink: Sink,
    coordinator: Coordinator<Ack>,
    /// The first checkpoint triggered once every subtask had finished: when
    /// one at least as new has committed, the run is complete.
    final_checkpoint: Option<u64>,
}

impl Live {
    fn finished(&self) -> bool {
        self.sources.iter().all(|s| s.ended)
            && self.operators.iter().all(|o| o.tracker.is_ended())
            && self.sink.tracker.is_ended()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Op(usize),
    Sink,
}

#[derive(Debug)]
enum Ev {
    /// A source emits its next record, or `End`.
    Emit(usize),
    /// A subtask reads one ready message.
    Wake(Node),
    /// A subtask's alignment deadline.
    Timer(Node),
    Trigger,
    Tick,
    Ack {
        checkpoint: u64,
        participant: String,
        ack: Ack,
    },
    Decline {
        checkpoint: u64,
        participant: String,
    },
    /// Write the manifest of a complete checkpoint.
    Persist {
        checkpoint: u64,
        acks: Vec<(String, Ack)>,
    },
    /// Commit `txns[next]`, one transaction per event so a crash can fall between them.
    Commit {
        checkpoint: u64,
        txns: Vec<u64>,
        next: usize,
    },
    Restart,
}

/// Whether handling an event crashed the region.
enum Flow {
    Go,
    Crash,
}

#[derive(Debug)]
struct Params {
    mode: AlignmentMode,
    coordinator: CoordinatorConfig,
    /// Latency bound of acknowledgements and manifest writes.
    delay_max_ms: u64,
    /// Latency bound of each operator's input channels, then of the sink's.
    operator_channel_delay_max_ms: Vec<Vec<u64>>,
    sink_channel_delay_max_ms: Vec<u64>,
    emit_gap_max_ms: u64,
    /// How slow the sink's external system commits one transaction.
    commit_step_max_ms: u64,
    trigger_every_ms: (u64, u64),
    p_crash: f64,
    p_crash_after_manifest: f64,
    p_crash_in_commit: f64,
    p_decline: f64,
}

/// What the seeds exercised, summed per mode to show the simulation is not vacuous.
#[derive(Debug, Default, Clone)]
struct Coverage {
    crashes: u64,
    crashes_after_manifest: u64,
    crashes_in_commit: u64,
    restores_from_manifest: u64,
    aligned_snapshots: u64,
    unaligned_snapshots: u64,
    recorded: u64,
    /// Barriers that arrived while an older checkpoint was still pending.
    early_barriers: u64,
    replayed: u64,
    declined: u64,
    timed_out: u64,
    commits: u64,
}

impl Coverage {
    fn add(&mut self, c: &Coverage) {
        self.crashes += c.crashes;
        self.crashes_after_manifest += c.crashes_after_manifest;
        self.crashes_in_commit += c.crashes_in_commit;
        self.restores_from_manifest += c.restores_from_manifest;
        self.aligned_snapshots += c.aligned_snapshots;
        self.unaligned_snapshots += c.unaligned_snapshots;
        self.recorded += c.recorded;
        self.early_barriers += c.early_barriers;
        self.replayed += c.replayed;
        self.declined += c.declined;
        self.timed_out += c.timed_out;
        self.commits += c.commits;
    }

    fn check(&self, test: &str) {
        let c = self;
        let common = [
            ("crashes", c.crashes),
            ("crashes between manifest and commit", c.crashes_after_manifest),
            ("crashes during commit", c.crashes_in_commit),
            ("restores from a manifest", c.restores_from_manifest),
            ("declined checkpoints", c.declined),
            ("timed-out checkpoints", c.timed_out),
            ("commits", c.commits),
            ("aligned snapshots", c.aligned_snapshots),
        ];
        for (what, n) in common {
            assert!(n > 0, "{test}: the seeds exercised no {what}: {c:?}");
        }
        if test == "aligned" {
            assert_eq!((c.unaligned_snapshots, c.recorded), (0, 0), "aligned mode recorded in-flight data: {c:?}");
        } else {
            let unaligned = [
                ("unaligned snapshots", c.unaligned_snapshots),
                ("recorded", c.recorded),
                ("replayed", c.replayed),
                ("early barriers", c.early_barriers),
            ];
            for (what, n) in unaligned {
                assert!(n > 0, "{test}: the seeds exercised no {what}: {c:?}");
            }
        }
    }
}

struct Sim {
    params: Params,
    rng: SmallRng,
    now: u64,
    events: BTreeMap<(u64, u64), Ev>,
    next_event: u64,
    durable: Durable,
    live: Option<Live>,
    crashes_left: u32,
    done: bool,
    coverage: Coverage,
    trace: Option<Vec<String>>,
}

impl Sim {
    fn new(seed: u64, mode: fn(&mut SmallRng) -> AlignmentMode, trace: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mode = mode(&mut rng);
        // Each source owns its keys, so per-key order is defined; the hash spreads them over both operators.
        let mut inputs = Vec::new();
        for source in 0..SOURCES as u32 {
            let keys = rng.random_range(2..=5u32);
            let mut seqs = vec![0u32; keys as usize];
            let records = (0..rng.random_range(30..=60))
                .map(|_| {
                    let k = rng.random_range(0..keys);
                    let seq = seqs[k as usize];
                    seqs[k as usize] += 1;
                    Rec { key: source * 100 + k, seq }
                })
                .collect();
            inputs.push(records);
        }
        let trigger_min = rng.random_range(3..=15);
        let params = Params {
            mode,
            coordinator: CoordinatorConfig {
                timeout_ms: rng.random_range(20..=200),
                max_concurrent: rng.random_range(1..=3),
            },
            delay_max_ms: rng.random_range(1..=8),
            operator_channel_delay_max_ms: (0..OPERATORS)
                .map(|_| (0..SOURCES).map(|_| channel_delay_max_ms(&mut rng)).collect())
                .collect(),
            sink_channel_delay_max_ms: (0..OPERATORS).map(|_| channel_delay_max_ms(&mut rng)).collect(),
            emit_gap_max_ms: rng.random_range(1..=4),
            commit_step_max_ms: rng.random_range(0..=40),
            trigger_every_ms: (trigger_min, trigger_min + rng.random_range(0..=30)),
            p_crash: 1.0 / 250.0,
            p_crash_after_manifest: 0.15,
            p_crash_in_commit: 0.1,
            p_decline: 0.03,
        };
        let crashes_left = rng.random_range(0..=CRASHES_MAX);
        Self {
            params,
            rng,
            now: 0,
            events: BTreeMap::new(),
            next_event: 0,
            durable: Durable { inputs, ..Durable::default() },
            live: None,
            crashes_left,
            done: false,
            coverage: Coverage::default(),
            trace: trace.then(Vec::new),
        }
    }

    fn run(mut self) -> Result<Coverage, String> {
        let result = self.run_to_completion();
        match (result, self.trace.take()) {
            (Ok(()), _) => Ok(self.coverage),
            (Err(e), None) => Err(e),
            (Err(e), Some(trace)) => Err(format!("{e}\nparams: {:?}\ntrace:\n{}", self.params, trace.join("\n"))),
        }
    }

    fn run_to_completion(&mut self) -> Result<(), String> {
        self.start()?;
        let mut events = 0;
        while !self.done {
            events += 1;
            if events > EVENTS_MAX {
                return Err(format!("not complete after {EVENTS_MAX} events (t = {} ms): stuck", self.now));
            }
            let Some(((at, _), ev)) = self.events.pop_first() else {
                return Err(format!("nothing left to do at t = {} ms, yet not complete", self.now));
            };
            self.now = at;
            if let Some(t) = &mut self.trace
                && !matches!(ev, Ev::Wake(_) | Ev::Tick)
            {
                t.push(format!("{at:>6} {ev:?}"));
            }
            if matches!(ev, Ev::Restart) {
                self.start()?;
                continue;
            }
            if self.crash_now(self.params.p_crash) {
                self.crash("at random");
                continue;
            }
            let Some(mut live) = self.live.take() else { return Err("an event while crashed".into()) };
            match self.handle(&mut live, ev)? {
                Flow::Go => self.live = Some(live),
                Flow::Crash => {}
            }
        }
        self.check_oracle()
    }

    /// Starts the region, fresh or from the newest durable manifest: the
    /// sink discards the staged transactions the manifest does not list and
    /// re-commits those it does, sources rewind, operators restore their
    /// counts, and both replay their recorded in-flight data before new input.
    fn start(&mut self) -> Result<(), String> {
        let (restored, manifest) = match self.durable.manifests.last_key_value() {
            Some((&id, m)) => (id, m.clone()),
            None => (0, Manifest::new()),
        };
        if restored > 0 {
            self.coverage.restores_from_manifest += 1;
        }
        let mode = self.params.mode;
        let sources = (0..SOURCES)
            .map(|i| match manifest.get(&format!("src[{i}]")) {
                Some(Ack::Source { offset }) => Source { offset: *offset, ended: false },
                _ => Source { offset: 0, ended: false },
            })
            .collect();
        let mut replays = Vec::new();
        let mut operators = Vec::new();
        for j in 0..OPERATORS {
            let (counts, inflight) = match manifest.get(&format!("count[{j}]")) {
                Some(Ack::Operator { counts, inflight }) => (counts.clone(), inflight.clone()),
                _ => (BTreeMap::new(), Vec::new()),
            };
            replays.push(inflight);
            operators.push(Operator {
                counts,
                inputs: self.params.operator_channel_delay_max_ms[j].iter().map(|&d| Channel::new(d)).collect(),
                tracker: InputTracker::new(SOURCES),
                aligner: BarrierAligner::new(SOURCES, mode),
                snapshot: None,
                timer: None,
            });
        }
        let (txns, sink_inflight) = match manifest.get(SINK) {
            Some(Ack::Sink { txns, inflight }) => (txns.clone(), inflight.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        let committed = &self.durable.committed;
        self.durable.staged.retain(|t, _| txns.contains(t) && !committed.contains(t));
        self.coverage.replayed += sink_inflight.len() as u64;
        let sink = Sink {
            pending: sink_inflight,
            uncommitted: txns.clone(),
            inputs: self.params.sink_channel_delay_max_ms.iter().map(|&d| Channel::new(d)).collect(),
            tracker: InputTracker::new(OPERATORS),
            aligner: BarrierAligner::new(OPERATORS, mode),
            snapshot: None,
            timer: None,
        };
        let mut participants: Vec<String> = (0..SOURCES).map(|i| format!("src[{i}]")).collect();
        participants.extend((0..OPERATORS).map(|j| format!("count[{j}]")));
        participants.push(SINK.into());
        let coordinator = Coordinator::new(participants, self.params.coordinator.clone(), restored);
        let mut live = Live { sources, operators, sink, coordinator, final_checkpoint: None };
        for (j, inflight) in replays.into_iter().enumerate() {
            for rec in inflight {
                self.coverage.replayed += 1;
                self.count(&mut live, j, rec);
            }
        }
        self.live = Some(live);
        if !txns.is_empty() {
            self.at(self.now, Ev::Commit { checkpoint: restored, txns, next: 0 });
        }
        for i in 0..SOURCES {
            let gap = self.rng.random_range(1..=self.params.emit_gap_max_ms);
            self.at(self.now + gap, Ev::Emit(i));
        }
        let every = self.trigger_every();
        self.at(self.now + every, Ev::Trigger);
        self.at(self.now + TICK_MS, Ev::Tick);
        Ok(())
    }

    fn crash(&mut self, why: &str) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>6} CRASH {why}", self.now));
        }
        self.crashes_left -= 1;
        self.coverage.crashes += 1;
        self.live = None;
        self.events.clear();
        let after = self.rng.random_range(1..=20);
        self.at(self.now + after, Ev::Restart);
    }

    fn handle(&mut self, live: &mut Live, ev: Ev) -> Result<Flow, String> {
        match ev {
            Ev::Emit(i) => self.emit(live, i),
            Ev::Wake(node) => self.wake(live, node)?,
            Ev::Timer(node) => {
                let deadline = match node {
                    Node::Op(j) => live.operators[j].aligner.deadline(),
                    Node::Sink => live.sink.aligner.deadline(),
                };
                if deadline.is_some_and(|d| d <= self.now) {
                    match node {
                        Node::Op(j) => {
                            let actions = live.operators[j].aligner.on_time(self.now);
                            self.operator_actions(live, j, actions)?;
                        }
                        Node::Sink => {
                            let actions = live.sink.aligner.on_time(self.now);
                            self.sink_actions(live, actions)?;
                        }
                    }
                }
                self.rearm(live, node);
            }
            Ev::Trigger => self.trigger(live)?,
            Ev::Tick => {
                for action in live.coordinator.tick(self.now) {
                    match action {
                        CoordAction::Aborted { .. } => self.coverage.timed_out += 1,
                        other => return Err(format!("tick answered {other:?}")),
                    }
                }
                self.at(self.now + TICK_MS, Ev::Tick);
            }
            Ev::Ack { checkpoint, participant, ack } => match live.coordinator.ack(checkpoint, &participant, ack) {
                CoordAction::Complete { checkpoint, acks } => {
                    let write = self.rng.random_range(1..=self.params.delay_max_ms);
                    self.at(self.now + write, Ev::Persist { checkpoint, acks });
                }
                CoordAction::None | CoordAction::Ignored => {}
                other => return Err(format!("ack answered {other:?}")),
            },
            Ev::Decline { checkpoint, participant } => {
                if let CoordAction::Aborted { .. } = live.coordinator.decline(checkpoint, &participant, "sim".into()) {
                    self.coverage.declined += 1;
                }
            }
            Ev::Persist { checkpoint, acks } => return self.persist(live, checkpoint, acks),
            Ev::Commit { checkpoint, txns, next } => return self.commit(live, checkpoint, txns, next),
            Ev::Restart => return Err("restart while running".into()),
        }
        Ok(Flow::Go)
    }

    fn emit(&mut self, live: &mut Live, i: usize) {
        let source = &mut live.sources[i];
        if source.ended {
            return;
        }
        match self.durable.inputs[i].get(source.offset).copied() {
            Some(rec) => {
                source.offset += 1;
                let j = rec.key as usize % OPERATORS;
                self.send_to_operator(live, j, i, Event::Data(rec));
                let gap = self.rng.random_range(1..=self.params.emit_gap_max_ms);
                self.at(self.now + gap, Ev::Emit(i));
            }
            None => {
                source.ended = true;
                for j in 0..OPERATORS {
                    self.send_to_operator(live, j, i, Event::End);
                }
            }
        }
    }

    /// Starts a checkpoint: sources inject the barrier at their offset and
    /// acknowledge it; subtasks that already finished acknowledge at once (a
    /// finished sink pre-commits what it holds), since no barrier reaches them.
    fn trigger(&mut self, live: &mut Live) -> Result<(), String> {
        let every = self.trigger_every();
        self.at(self.now + every, Ev::Trigger);
        let Some(n) = live.coordinator.trigger(self.now) else { return Ok(()) };
        if live.finished() && live.final_checkpoint.is_none() {
            live.final_checkpoint = Some(n);
        }
        for i in 0..SOURCES {
            if !live.sources[i].ended {
                for j in 0..OPERATORS {
                    self.send_to_operator(live, j, i, Event::Barrier(n));
                }
            }
            self.ack(format!("src[{i}]"), n, Ack::Source { offset: live.sources[i].offset }, false);
        }
        for j in 0..OPERATORS {
            let op = &live.operators[j];
            if op.tracker.is_ended() {
                let ack = Ack::Operator { counts: op.counts.clone(), inflight: Vec::new() };
                self.ack(format!("count[{j}]"), n, ack, true);
            }
        }
        if live.sink.tracker.is_ended() {
            self.pre_commit(live, n)?;
            let ack = Ack::Sink { txns: live.sink.uncommitted.clone(), inflight: Vec::new() };
            self.ack(SINK.into(), n, ack, false);
        }
        Ok(())
    }

    /// Reads one message from a random channel that has one ready and is not blocked.
    fn wake(&mut self, live: &mut Live, node: Node) -> Result<(), String> {
        let ready = self.ready(live, node);
        if !ready.is_empty() {
            let c = ready[self.rng.random_range(0..ready.len())];
            if let Some(t) = &mut self.trace {
                let ev = match node {
                    Node::Op(j) => live.operators[j].inputs[c].queue.front().map(|m| format!("{:?}", m.1)),
                    Node::Sink => live.sink.inputs[c].queue.front().map(|m| format!("{:?}", m.1)),
                };
                t.push(format!("{:>6} {node:?} reads channel {c}: {}", self.now, ev.unwrap_or_default()));
            }
            match node {
                Node::Op(j) => {
                    let Some((_, ev)) = live.operators[j].inputs[c].queue.pop_front() else { return Ok(()) };
                    self.operator_event(live, j, c, ev)?;
                }
                Node::Sink => {
                    let Some((_, ev)) = live.sink.inputs[c].queue.pop_front() else { return Ok(()) };
                    self.sink_event(live, c, ev)?;
                }
            }
        }
        if !self.ready(live, node).is_empty() {
            let next = self.rng.random_range(0..=1);
            self.at(self.now + next, Ev::Wake(node));
        }
        self.rearm(live, node);
        Ok(())
    }

    fn ready(&self, live: &Live, node: Node) -> Vec<usize> {
        let now = self.now;
        let arrived = |front: Option<u64>| front.is_some_and(|at| at <= now);
        match node {
            Node::Op(j) => {
                let op = &live.operators[j];
                (0..SOURCES)
                    .filter(|&c| !op.aligner.is_blocked(c) && arrived(op.inputs[c].queue.front().map(|m| m.0)))
                    .collect()
            }
            Node::Sink => (0..OPERATORS)
                .filter(|&c| {
                    !live.sink.aligner.is_blocked(c) && arrived(live.sink.inputs[c].queue.front().map(|m| m.0))
                })
                .collect(),
        }
    }

    /// Schedules a timer at the node's alignment deadline, once per deadline.
    fn rearm(&mut self, live: &mut Live, node: Node) {
        let (deadline, timer) = match node {
            Node::Op(j) => (live.operators[j].aligner.deadline(), &mut live.operators[j].timer),
            Node::Sink => (live.sink.aligner.deadline(), &mut live.sink.timer),
        };
        if let Some(d) = deadline
            && *timer != Some(d)
        {
            *timer = Some(d);
            self.at(d.max(self.now), Ev::Timer(node));
        }
    }

    fn operator_event(&mut self, live: &mut Live, j: usize, c: usize, ev: Event<Rec>) -> Result<(), String> {
        match ev {
            Event::Data(rec) => {
                let action = live.operators[j].aligner.on_data(c);
                self.count(live, j, rec);
                if let DataAction::ProcessAndRecord { checkpoint } = action {
                    match &mut live.operators[j].snapshot {
                        Some(s) if s.checkpoint == checkpoint => s.inflight.push(rec),
                        _ => return Err(format!("count[{j}]: told to record for {checkpoint}, not being snapshotted")),
                    }
                    self.coverage.recorded += 1;
                }
            }
            Event::Barrier(n) => {
                self.early(live.operators[j].aligner.pending(), n);
                let actions = live.operators[j].aligner.on_barrier(c, n, self.now);
                self.operator_actions(live, j, actions)?;
            }
            Event::End => {
                live.operators[j].tracker.on_end(c);
                let actions = live.operators[j].aligner.on_end(c);
                self.operator_actions(live, j, actions)?;
                if live.operators[j].tracker.is_ended() {
                    self.send_to_sink(live, j, Event::End);
                }
            }
            Event::Watermark(_) => {}
        }
        Ok(())
    }

    /// The operator's work: count the record's key and emit it with the count.
    fn count(&mut self, live: &mut Live, j: usize, rec: Rec) {
        let count = live.operators[j].counts.entry(rec.key).or_insert(0);
        *count += 1;
        let out = Out { key: rec.key, seq: rec.seq, count: *count };
        self.send_to_sink(live, j, Event::Data(out));
    }

    fn operator_actions(&mut self, live: &mut Live, j: usize, actions: Vec<AlignAction>) -> Result<(), String> {
        for action in actions {
            match action {
                AlignAction::Snapshot { checkpoint, unaligned } => {
                    let op = &mut live.operators[j];
                    if let Some(open) = &op.snapshot {
                        return Err(format!("count[{j}]: snapshot {checkpoint} while {} is open", open.checkpoint));
                    }
                    op.snapshot = Some(Snap { checkpoint, state: op.counts.clone(), inflight: Vec::new() });
                    self.snapshotted(unaligned);
                    self.send_to_sink(live, j, Event::Barrier(checkpoint));
                }
                AlignAction::Complete { checkpoint } => match live.operators[j].snapshot.take() {
                    Some(s) if s.checkpoint == checkpoint => {
                        let ack = Ack::Operator { counts: s.state, inflight: s.inflight };
                        self.ack(format!("count[{j}]"), checkpoint, ack, true);
                    }
                    _ => return Err(format!("count[{j}]: complete {checkpoint} without its snapshot")),
                },
            }
        }
        Ok(())
    }

    fn sink_event(&mut self, live: &mut Live, c: usize, ev: Event<Out>) -> Result<(), String> {
        match ev {
            Event::Data(out) => {
                let action = live.sink.aligner.on_data(c);
                live.sink.pending.push(out);
                if let DataAction::ProcessAndRecord { checkpoint } = action {
                    match &mut live.sink.snapshot {
                        Some(s) if s.checkpoint == checkpoint => s.inflight.push(out),
                        _ => return Err(format!("sink: told to record for {checkpoint}, not being snapshotted")),
                    }
                    self.coverage.recorded += 1;
                }
            }
            Event::Barrier(n) => {
                self.early(live.sink.aligner.pending(), n);
                let actions = live.sink.aligner.on_barrier(c, n, self.now);
                self.sink_actions(live, actions)?;
            }
            Event::End => {
                live.sink.tracker.on_end(c);
                let actions = live.sink.aligner.on_end(c);
                self.sink_actions(live, actions)?;
            }
            Event::Watermark(_) => {}
        }
        Ok(())
    }

    fn sink_actions(&mut self, live: &mut Live, actions: Vec<AlignAction>) -> Result<(), String> {
        for action in actions {
            match action {
                AlignAction::Snapshot { checkpoint, unaligned } => {
                    if let Some(open) = &live.sink.snapshot {
                        return Err(format!("sink: snapshot {checkpoint} while {} is open", open.checkpoint));
                    }
                    self.pre_commit(live, checkpoint)?;
                    let state = live.sink.uncommitted.clone();
                    live.sink.snapshot = Some(Snap { checkpoint, state, inflight: Vec::new() });
                    self.snapshotted(unaligned);
                }
                AlignAction::Complete { checkpoint } => match live.sink.snapshot.take() {
                    Some(s) if s.checkpoint == checkpoint => {
                        self.ack(SINK.into(), checkpoint, Ack::Sink { txns: s.state, inflight: s.inflight }, false);
                    }
                    _ => return Err(format!("sink: complete {checkpoint} without its snapshot")),
                },
            }
        }
        Ok(())
    }

    /// Two-phase commit, phase one: the pending records become transaction
    /// `checkpoint`, staged durably in the external system.
    fn pre_commit(&mut self, live: &mut Live, checkpoint: u64) -> Result<(), String> {
        if self.durable.staged.contains_key(&checkpoint) || self.durable.committed.contains(&checkpoint) {
            return Err(format!("transaction {checkpoint} staged twice"));
        }
        self.durable.staged.insert(checkpoint, std::mem::take(&mut live.sink.pending));
        live.sink.uncommitted.push(checkpoint);
        Ok(())
    }

    fn persist(&mut self, live: &mut Live, checkpoint: u64, acks: Vec<(String, Ack)>) -> Result<Flow, String> {
        if checkpoint <= live.coordinator.last_completed() {
            return Ok(Flow::Go); // a newer manifest is already durable
        }
        let manifest: Manifest = acks.into_iter().collect();
        let txns = match manifest.get(SINK) {
            Some(Ack::Sink { txns, .. }) => txns.clone(),
            other => return Err(format!("manifest {checkpoint} has no sink entry: {other:?}")),
        };
        self.durable.manifests.insert(checkpoint, manifest);
        if self.crash_now(self.params.p_crash_after_manifest) {
            self.coverage.crashes_after_manifest += 1;
            self.crash("between manifest and commit");
            return Ok(Flow::Crash);
        }
        match live.coordinator.persisted(checkpoint) {
            CoordAction::Commit { checkpoint } => {
                self.at(self.now, Ev::Commit { checkpoint, txns, next: 0 });
                Ok(Flow::Go)
            }
            other => Err(format!("persisted({checkpoint}) answered {other:?}")),
        }
    }

    /// Two-phase commit, phase two: commits `txns[next]` (idempotently).
    fn commit(&mut self, live: &mut Live, checkpoint: u64, txns: Vec<u64>, next: usize) -> Result<Flow, String> {
        let Some(&txn) = txns.get(next) else {
            self.coverage.commits += 1;
            if live.final_checkpoint.is_some_and(|f| checkpoint >= f) {
                self.done = true;
            }
            return Ok(Flow::Go);
        };
        if !self.durable.committed.contains(&txn) {
            let listed = self.durable.manifests.values().any(|m| match m.get(SINK) {
                Some(Ack::Sink { txns, .. }) => txns.contains(&txn),
                _ => false,
            });
            if !listed {
                return Err(format!("transaction {txn} committed, but no durable manifest lists it"));
            }
            let Some(records) = self.durable.staged.remove(&txn) else {
                return Err(format!("manifest {checkpoint} lists transaction {txn}, which is not staged"));
            };
            self.durable.output.extend(records);
            self.durable.committed.insert(txn);
        }
        live.sink.uncommitted.retain(|&t| t != txn);
        if self.crash_now(self.params.p_crash_in_commit) {
            self.coverage.crashes_in_commit += 1;
            self.crash("during commit");
            return Ok(Flow::Crash);
        }
        let step = self.rng.random_range(0..=self.params.commit_step_max_ms);
        self.at(self.now + step, Ev::Commit { checkpoint, txns, next: next + 1 });
        Ok(Flow::Go)
    }

    fn check_oracle(&self) -> Result<(), String> {
        let mut expected: BTreeMap<u32, u32> = BTreeMap::new();
        for rec in self.durable.inputs.iter().flatten() {
            *expected.entry(rec.key).or_insert(0) += 1;
        }
        let mut next: BTreeMap<u32, u32> = BTreeMap::new();
        for (i, out) in self.durable.output.iter().enumerate() {
            let seq = next.entry(out.key).or_insert(0);
            if out.seq != *seq {
                return Err(format!(
                    "committed output #{i} is key {} seq {} where seq {} was due: duplicated, lost or reordered",
                    out.key, out.seq, seq
                ));
            }
            if out.count != u64::from(out.seq) + 1 {
                return Err(format!(
                    "key {} seq {} carries count {}: operator state not exactly once",
                    out.key, out.seq, out.count
                ));
            }
            *seq += 1;
        }
        if next != expected {
            return Err(format!("committed per key {next:?}, the inputs hold {expected:?}"));
        }
        Ok(())
    }

    fn ack(&mut self, participant: String, checkpoint: u64, ack: Ack, may_decline: bool) {
        let at = self.now + self.rng.random_range(0..=self.params.delay_max_ms);
        if may_decline && self.rng.random_bool(self.params.p_decline) {
            self.at(at, Ev::Decline { checkpoint, participant });
        } else {
            self.at(at, Ev::Ack { checkpoint, participant, ack });
        }
    }

    fn early(&mut self, pending: Option<u64>, barrier: u64) {
        if pending.is_some_and(|p| p < barrier) {
            self.coverage.early_barriers += 1;
        }
    }

    fn snapshotted(&mut self, unaligned: bool) {
        if unaligned {
            self.coverage.unaligned_snapshots += 1;
        } else {
            self.coverage.aligned_snapshots += 1;
        }
    }

    fn send_to_operator(&mut self, live: &mut Live, j: usize, c: usize, ev: Event<Rec>) {
        let channel = &mut live.operators[j].inputs[c];
        let at = self.arrival(channel.last_arrival, channel.delay_max_ms);
        channel.last_arrival = at;
        channel.queue.push_back((at, ev));
        self.at(at, Ev::Wake(Node::Op(j)));
    }

    fn send_to_sink(&mut self, live: &mut Live, c: usize, ev: Event<Out>) {
        let channel = &mut live.sink.inputs[c];
        let at = self.arrival(channel.last_arrival, channel.delay_max_ms);
        channel.last_arrival = at;
        channel.queue.push_back((at, ev));
        self.at(at, Ev::Wake(Node::Sink));
    }

    /// A random delay, never overtaking the channel's previous message (FIFO).
    fn arrival(&mut self, last_arrival: u64, delay_max_ms: u64) -> u64 {
        (self.now + self.rng.random_range(0..=delay_max_ms)).max(last_arrival)
    }

    fn trigger_every(&mut self) -> u64 {
        let (lo, hi) = self.params.trigger_every_ms;
        self.rng.random_range(lo..=hi)
    }

    /// Whether a crash happens now, with probability `p`, while the seed has crashes left.
    fn crash_now(&mut self, p: f64) -> bool {
        self.crashes_left > 0 && self.rng.random_bool(p)
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.events.insert((time, self.next_event), ev);
        self.next_event += 1;
    }
}
