//! The coordinator's durable state, kept with conditional writes (create-if-absent) in a
//! shared directory or object store ([`ConditionalStore`]):
//!
//! ```text
//! leader/<epoch:012>          {"node", "address"}: the coordinator that leads from this epoch
//! jobs/<job>/<version:012>    a job's record; the highest version is current
//! ```
//!
//! A coordinator leads from the epoch it created; one that finds a higher epoch has been
//! replaced and stops. Every change of a job is the creation of its next version: a
//! coordinator that lost the race for a version (another one wrote it) has lost
//! leadership and stops before acting on the job. A new leader re-writes every running
//! job's record first, so a replaced coordinator's next write on any of them fails.

use serde::{Deserialize, Serialize};

use crate::protocol::ResourceNeeds;

use flumen_state::ConditionalStore;

use crate::protocol::{Capacity, JobState, TaskId};

/// Versions of a job's record kept behind the current one (older ones are deleted).
const VERSIONS_KEPT: u64 = 4;

/// Why the coordinator's state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("coordinator state: {0}")]
    Store(#[from] flumen_state::StateError),
    #[error("coordinator state: {key} does not parse: {reason}")]
    Damaged { key: String, reason: String },
    #[error("another coordinator leads now (epoch {newer}, this one has {ours}): stopping")]
    Replaced { ours: u64, newer: u64 },
}

/// One region of a job: what it needs, where it runs, how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRecord {
    pub name: String,
    pub needs: Capacity,
    /// The worker running it, and the task (its epoch) it runs in.
    pub worker: Option<String>,
    pub epoch: u64,
    /// Started before: a new placement resumes from its checkpoints.
    pub started: bool,
    pub done: Option<RegionEnd>,
    /// `[job] spread`: how many workers the region may run across (0 or 1: one).
    #[serde(default)]
    pub spread: u32,
    /// Each node's needs per subtask and its parallelism: what a part of the region needs.
    #[serde(default)]
    pub nodes: Vec<(ResourceNeeds, u32)>,
    /// When the region runs split: the workers of parts 1.. (part 0, which leads, is `worker`).
    #[serde(default)]
    pub parts: Vec<String>,
    /// Workers still running a part of an earlier placement of this region (with its
    /// epoch): the region is placed again only once each ended it or was lost, so that an
    /// old leading part can commit nothing beside a new one.
    #[serde(default)]
    pub draining: Vec<(String, u64)>,
    /// When split: the workers whose part of this placement reported `Finished`.
    #[serde(default)]
    pub finished_parts: Vec<String>,
}

impl RegionRecord {
    /// Whether `worker` runs this region, or a part of it.
    pub fn runs_on(&self, worker: &str) -> bool {
        self.worker.as_deref() == Some(worker) || self.parts.iter().any(|p| p == worker)
    }

    /// The workers running it, part 0 first.
    pub fn part_workers(&self) -> impl Iterator<Item = &String> {
        self.worker.iter().chain(self.parts.iter())
    }

    /// The most subtasks any node of the region has (more parts than this run nothing).
    pub fn max_parallelism(&self) -> u32 {
        self.nodes.iter().map(|(_, p)| *p).max().unwrap_or(1)
    }

    /// What part `part` of `parts` needs: its nodes' needs for the subtasks `i` with
    /// `i % parts == part`.
    pub fn part_needs(&self, parts: u32, part: u32) -> Capacity {
        crate::placement::region_needs(self.nodes.iter().map(|(needs, parallelism)| {
            (*needs, (0..*parallelism).filter(|i| i % parts.max(1) == part).count() as u32)
        }))
    }
}

/// How a region ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionEnd {
    Finished,
    Stopped,
}

/// A job as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub job: String,
    pub spec: String,
    pub state: JobState,
    /// The newest task epoch handed out for this job.
    pub epoch: u64,
    /// With `[checkpoint]`: regions are placed independently and resume after a loss.
    /// Without: the whole job is one task.
    pub checkpointed: bool,
    /// Submitted with `--resume`: the first placement resumes too.
    pub resume: bool,
    pub regions: Vec<RegionRecord>,
    pub failovers: u64,
    pub note: Option<String>,
    /// Rows the finished tasks wrote.
    pub rows_out: u64,
}

impl JobRecord {
    pub fn task_regions(&self, task: &TaskId) -> impl Iterator<Item = &RegionRecord> {
        self.regions.iter().filter(move |r| r.epoch == task.epoch && task.job == self.job)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderRecord {
    node: String,
    address: String,
}

/// The state store as one coordinator holds it.
#[derive(Debug)]
pub struct HaState {
    store: ConditionalStore,
    epoch: u64,
    versions: std::collections::HashMap<String, u64>,
}

fn key(n: u64) -> String {
    format!("{n:012}")
}

fn parse_key(name: &str) -> Option<u64> {
    (name.len() == 12).then(|| name.parse().ok()).flatten()
}

impl HaState {
    /// Takes leadership: creates the epoch after the highest one in the store.
    pub async fn lead(store: ConditionalStore, node: &str, address: &str) -> Result<Self, HaError> {
        let record = serde_json::to_vec(&LeaderRecord { node: node.to_owned(), address: address.to_owned() })
            .map_err(|e| HaError::Damaged { key: "leader".into(), reason: e.to_string() })?;
        loop {
            let newest = store.list("leader").await?.iter().filter_map(|n| parse_key(n)).max().unwrap_or(0);
            let epoch = newest + 1;
            if store.create(&format!("leader/{}", key(epoch)), record.clone()).await? {
                return Ok(Self { store, epoch, versions: Default::default() });
            }
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Fails once another coordinator has taken a higher epoch.
    pub async fn check_leadership(&self) -> Result<(), HaError> {
        let newest = self.store.list("leader").await?.iter().filter_map(|n| parse_key(n)).max().unwrap_or(0);
        if newest > self.epoch {
            return Err(HaError::Replaced { ours: self.epoch, newer: newest });
        }
        Ok(())
    }

    /// Every job's current record. A version that does not parse (damaged outside
    /// Flumen: every write is whole or absent) is skipped with an error naming it, and the
    /// one before it is used; a job none of whose versions parse is left out, named too.
    pub async fn load_jobs(&mut self) -> Result<Vec<JobRecord>, HaError> {
        let mut jobs = Vec::new();
        for job in self.store.list("jobs").await? {
            let mut versions: Vec<u64> =
                self.store.list(&format!("jobs/{job}")).await?.iter().filter_map(|n| parse_key(n)).collect();
            versions.sort_unstable_by(|a, b| b.cmp(a));
            let newest = versions.first().copied();
            let mut found = None;
            for version in versions {
                let at = format!("jobs/{job}/{}", key(version));
                let Some(bytes) = self.store.get(&at).await? else { continue };
                match serde_json::from_slice::<JobRecord>(&bytes) {
                    Ok(record) if record.job == job => {
                        found = Some(record);
                        break;
                    }
                    Ok(record) => tracing::error!("coordinator state: {at} names job {:?}; skipped", record.job),
                    Err(e) => {
                        tracing::error!("coordinator state: {at} does not parse ({e}); trying the version before")
                    }
                }
            }
            match (found, newest) {
                (Some(record), Some(newest)) => {
                    // The next write goes above every version, damaged ones included.
                    self.versions.insert(job, newest);
                    jobs.push(record);
                }
                _ => tracing::error!("coordinator state: no readable record of job {job:?}; it is left out"),
            }
        }
        Ok(jobs)
    }

    /// Writes `record` as the job's next version. Losing the race for it means another
    /// coordinator wrote the job: [`HaError::Replaced`].
    pub async fn save(&mut self, record: &JobRecord) -> Result<(), HaError> {
        let current = self.versions.get(&record.job).copied();
        let next = match current {
            Some(v) => v + 1,
            None => {
                let listed = self.store.list(&format!("jobs/{}", record.job)).await?;
                listed.iter().filter_map(|n| parse_key(n)).max().unwrap_or(0) + 1
            }
        };
        let bytes = serde_json::to_vec(record)
            .map_err(|e| HaError::Damaged { key: record.job.clone(), reason: e.to_string() })?;
        if !self.store.create(&format!("jobs/{}/{}", record.job, key(next)), bytes).await? {
            let newest =
                self.store.list("leader").await?.iter().filter_map(|n| parse_key(n)).max().unwrap_or(self.epoch);
            return Err(HaError::Replaced { ours: self.epoch, newer: newest.max(self.epoch + 1) });
        }
        self.versions.insert(record.job.clone(), next);
        if next > VERSIONS_KEPT {
            let old = next - VERSIONS_KEPT;
            let _ = self.store.delete(&format!("jobs/{}/{}", record.job, key(old))).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> ConditionalStore {
        let url = flumen_state::StoreUrl::parse(&format!("file://{}", dir.display())).expect("url");
        ConditionalStore::open(&url).expect("opens")
    }

    fn record(job: &str) -> JobRecord {
        JobRecord {
            job: job.into(),
            spec: "/jobs/wc.toml".into(),
            state: JobState::Running,
            epoch: 1,
            checkpointed: true,
            resume: false,
            regions: vec![],
            failovers: 0,
            note: None,
            rows_out: 0,
        }
    }

    #[test]
    fn a_part_needs_what_its_subtasks_need_and_an_old_record_reads_as_unsplit() {
        let gpu = ResourceNeeds { cores: 1, memory_mb: 100, gpu: 1 };
        let none = ResourceNeeds::default();
        let r = RegionRecord {
            name: "gen".into(),
            needs: Capacity { cores: 5, memory_mb: 500, gpu: 5 },
            worker: Some("w-1".into()),
            epoch: 3,
            started: true,
            done: None,
            spread: 2,
            nodes: vec![(none, 1), (gpu, 5)],
            parts: vec!["w-2".into()],
            draining: vec![],
            finished_parts: vec![],
        };
        // Subtasks 0, 2, 4 in part 0; 1, 3 in part 1.
        assert_eq!(r.part_needs(2, 0), Capacity { cores: 3, memory_mb: 300, gpu: 3 });
        assert_eq!(r.part_needs(2, 1), Capacity { cores: 2, memory_mb: 200, gpu: 2 });
        assert_eq!(r.part_needs(1, 0), r.needs);
        assert_eq!(r.max_parallelism(), 5);
        assert!(r.runs_on("w-1") && r.runs_on("w-2") && !r.runs_on("w-3"));
        assert_eq!(r.part_workers().collect::<Vec<_>>(), ["w-1", "w-2"]);
        // A record written before regions could be split still reads.
        let old = r#"{"name":"gen","needs":{"cores":1,"memory_mb":0,"gpu":0},"worker":null,"epoch":0,"started":false,"done":null}"#;
        let old: RegionRecord = serde_json::from_str(old).expect("reads");
        assert!(old.parts.is_empty() && old.draining.is_empty() && old.spread == 0);
    }

    #[tokio::test]
    async fn a_second_coordinator_replaces_the_first_which_can_no_longer_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = HaState::lead(store(dir.path()), "coordinator", "127.0.0.1:1").await.expect("leads");
        first.save(&record("wc")).await.expect("saves");
        let mut second = HaState::lead(store(dir.path()), "coordinator", "127.0.0.1:2").await.expect("leads");
        assert_eq!(second.epoch(), first.epoch() + 1);
        let jobs = second.load_jobs().await.expect("loads");
        assert_eq!(jobs, vec![record("wc")]);
        // The new leader adopts the job first; the old one's next write loses.
        second.save(&jobs[0]).await.expect("adopts");
        assert!(matches!(first.save(&record("wc")).await, Err(HaError::Replaced { .. })));
        assert!(matches!(first.check_leadership().await, Err(HaError::Replaced { .. })));
        second.check_leadership().await.expect("still leads");
    }

    #[tokio::test]
    async fn a_damaged_record_falls_back_to_the_version_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ha = HaState::lead(store(dir.path()), "coordinator", "127.0.0.1:1").await.expect("leads");
        let mut wc = record("wc");
        ha.save(&wc).await.expect("saves");
        wc.epoch = 7;
        ha.save(&wc).await.expect("saves");
        ha.save(&record("other")).await.expect("saves");
        std::fs::write(dir.path().join("jobs/wc/000000000002"), b"{not json").expect("damages");
        std::fs::write(dir.path().join("jobs/other/000000000001"), b"").expect("damages");
        let mut next = HaState::lead(store(dir.path()), "coordinator", "127.0.0.1:2").await.expect("leads");
        let jobs = next.load_jobs().await.expect("loads what it can");
        assert_eq!(jobs, vec![record("wc")], "the damaged version is skipped, the unreadable job left out");
        next.save(&jobs[0]).await.expect("writes above the damaged version");
        assert!(dir.path().join("jobs/wc/000000000003").is_file());
    }
}
