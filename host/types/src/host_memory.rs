//! Host memory held on a guest's behalf: a per-instance budget (`limits.host_memory_mb`) that
//! every such allocation is charged to before it is made, released when it is freed.
//!
//! A [`HostMemoryBudget`] belongs to one operator instance; a [`HostMemoryCharge`] is an RAII
//! guard for some of it (a state read being gathered, an open blob writer's buffer), which gives
//! its bytes back when dropped. Charging past the budget fails with [`HostMemoryExceeded`], whose
//! message names the limit, the operator and the figures.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The host memory one operator instance may hold on its guest's behalf.
///
/// A cheap handle (`Clone`): every clone shares one account.
#[derive(Clone)]
pub struct HostMemoryBudget {
    inner: Arc<Account>,
}

struct Account {
    /// `id[subtask]` of the instance, for messages.
    owner: String,
    limit: u64,
    used: AtomicU64,
}

impl HostMemoryBudget {
    /// A budget of `limit` bytes for the instance `owner` (`id[subtask]`).
    pub fn new(owner: impl Into<String>, limit: u64) -> Self {
        Self { inner: Arc::new(Account { owner: owner.into(), limit, used: AtomicU64::new(0) }) }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes charged and not yet released.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// A guard for `what`, holding nothing yet; [`HostMemoryCharge::grow`] adds to it.
    pub fn empty(&self, what: &'static str) -> HostMemoryCharge {
        HostMemoryCharge { budget: self.clone(), bytes: 0, what }
    }

    /// Charges `bytes` for `what` (e.g. `"state value-get-many"`), or refuses if the budget
    /// would be exceeded; the bytes are released when the guard drops.
    pub fn charge(&self, what: &'static str, bytes: u64) -> Result<HostMemoryCharge, HostMemoryExceeded> {
        let mut c = HostMemoryCharge { budget: self.clone(), bytes: 0, what };
        c.grow(bytes)?;
        Ok(c)
    }

    fn take(&self, what: &'static str, bytes: u64) -> Result<(), HostMemoryExceeded> {
        let account = &self.inner;
        account
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= account.limit)
            })
            .map(|_| ())
            .map_err(|used| HostMemoryExceeded {
                owner: account.owner.clone(),
                limit: account.limit,
                held: used,
                asked: bytes,
                what,
            })
    }

    fn give_back(&self, bytes: u64) {
        // Every release matches an earlier successful charge, so this never wraps.
        self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl fmt::Debug for HostMemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemoryBudget")
            .field("owner", &self.inner.owner)
            .field("limit", &self.inner.limit)
            .field("used", &self.used())
            .finish()
    }
}

/// Bytes charged to a [`HostMemoryBudget`]; released when dropped.
pub struct HostMemoryCharge {
    budget: HostMemoryBudget,
    bytes: u64,
    what: &'static str,
}

impl HostMemoryCharge {
    /// Charges `bytes` more to this guard, or refuses (charging nothing) past the budget.
    pub fn grow(&mut self, bytes: u64) -> Result<(), HostMemoryExceeded> {
        self.budget.take(self.what, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Bytes this guard holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives every byte back now (the guard stays usable and holds nothing).
    pub fn release(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.bytes));
    }
}

impl Drop for HostMemoryCharge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl fmt::Debug for HostMemoryCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemoryCharge").field("bytes", &self.bytes).field("what", &self.what).finish()
    }
}

/// A charge the budget refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMemoryExceeded {
    /// `id[subtask]` of the instance.
    pub owner: String,
    /// The budget, in bytes.
    pub limit: u64,
    /// Bytes already held when the charge was refused.
    pub held: u64,
    /// Bytes asked for.
    pub asked: u64,
    /// What they were for.
    pub what: &'static str,
}

impl fmt::Display for HostMemoryExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.what.is_empty() { "a host call" } else { self.what };
        write!(
            f,
            "operator {} crossed its host memory limit `host_memory_mb` = {} MiB: {what} needs {} more bytes \
             with {} bytes already held on its behalf (raise `limits.host_memory_mb`, or ask for less at a time)",
            self.owner,
            self.limit >> 20,
            self.asked,
            self.held,
        )
    }
}

impl std::error::Error for HostMemoryExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_releases_on_drop() {
        let budget = HostMemoryBudget::new("op[0]", 100);
        let a = budget.charge("a", 60).expect("within budget");
        assert_eq!(budget.used(), 60);
        let err = budget.charge("state value-get-many", 41).expect_err("over budget");
        assert_eq!(budget.used(), 60, "a refused charge takes nothing");
        let text = err.to_string();
        for needle in ["op[0]", "host_memory_mb", "state value-get-many", "41 more bytes", "60 bytes already held"] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
        let mut b = budget.charge("b", 40).expect("exactly at the limit");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        b.grow(50).expect("room again");
        assert_eq!(b.bytes(), 90);
        assert!(b.grow(11).is_err());
        b.release();
        assert_eq!(budget.used(), 0);
        b.grow(5).expect("a released guard charges again");
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn huge_charges_do_not_wrap() {
        let budget = HostMemoryBudget::new("op[1]", u64::MAX - 1);
        let _a = budget.charge("a", 10).expect("within budget");
        assert!(budget.charge("b", u64::MAX).is_err());
        let mut empty = budget.empty("c");
        assert!(empty.grow(u64::MAX - 5).is_err());
        assert_eq!(budget.used(), 10);
    }
}
