//! The `state` capability: host functions that give a guest keyed and
//! operator-wide state, backed by whatever store the engine plugs in.
//!
//! The wasm crate does not know where state lives (the engine backs it with
//! fjall); it only checks what a guest passes against the limits below before
//! the backend sees it, and turns every failure into a WIT `error` the guest
//! can handle, never a trap of the host.

use std::sync::{Arc, Mutex};

use flumen_types::{HostMemoryCharge, HostMemoryExceeded};
use wasmtime::StoreContextMut;
use wasmtime::component::LinkerInstance;

use crate::abi::{WitError, WitErrorKind};
use crate::instance::HostState;

// The limits a guest's state calls are checked against: the store's own, defined once.
pub use flumen_types::{STATE_KEY_BYTES_MAX, STATE_NAME_BYTES_MAX, STATE_VALUE_BYTES_MAX};
// The capability's trait and fault, defined with the limits in `flumen-types`.
pub use flumen_types::{Entries, STATE_BATCH_MAX, StateBackend, StateFault};

/// A subtask's state, shared by the engine (which snapshots and restores it
/// at checkpoints) and the instance that reads and writes it. A replacement
/// instance (after a retry) gets the same handle.
#[derive(Clone)]
pub struct StateHandle(pub Arc<Mutex<Box<dyn StateBackend>>>);

impl StateHandle {
    pub fn new(backend: Box<dyn StateBackend>) -> Self {
        Self(Arc::new(Mutex::new(backend)))
    }

    /// Runs `f` on the backend. A poisoned lock (a panic while holding it)
    /// is reported as a fault, not propagated.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn StateBackend) -> Result<T, StateFault>) -> Result<T, StateFault> {
        let mut guard = self.0.lock().map_err(|_| StateFault::internal("state store lock poisoned"))?;
        f(guard.as_mut())
    }
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateHandle")
    }
}

type Ret<T> = wasmtime::Result<(Result<T, WitError>,)>;

fn to_wit(f: StateFault) -> WitError {
    WitError { kind: if f.limit { WitErrorKind::Limit } else { WitErrorKind::Internal }, message: f.message }
}

fn limit(message: String) -> StateFault {
    StateFault::limit(message)
}

/// A refused host memory charge, as the guest sees it: a `limit` error.
fn over_budget(e: HostMemoryExceeded) -> StateFault {
    limit(e.to_string())
}

fn check_name(name: &str) -> Result<(), StateFault> {
    if name.len() > STATE_NAME_BYTES_MAX {
        return Err(limit(format!("state name of {} bytes (at most {STATE_NAME_BYTES_MAX})", name.len())));
    }
    Ok(())
}

fn check_key(what: &str, key: &[u8]) -> Result<(), StateFault> {
    if key.len() > STATE_KEY_BYTES_MAX {
        return Err(limit(format!("state {what} of {} bytes (at most {STATE_KEY_BYTES_MAX})", key.len())));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StateFault> {
    if value.len() > STATE_VALUE_BYTES_MAX {
        return Err(limit(format!("state value of {} bytes (at most {STATE_VALUE_BYTES_MAX})", value.len())));
    }
    Ok(())
}

fn check_count(n: usize) -> Result<(), StateFault> {
    if n > STATE_BATCH_MAX {
        return Err(limit(format!("{n} entries in one state call (at most {STATE_BATCH_MAX})")));
    }
    Ok(())
}

/// Checks a batch call's keys: how many, and each one.
fn check_keys(keys: &[Vec<u8>]) -> Result<(), StateFault> {
    check_count(keys.len())?;
    keys.iter().try_for_each(|k| check_key("key", k))
}

/// Checks a batch call's (key, value) pairs.
fn check_key_values(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault> {
    check_count(pairs.len())?;
    pairs.iter().try_for_each(|(k, v)| {
        check_key("key", k)?;
        check_value(v)
    })
}

/// Checks a batch call's (key, map field) pairs.
fn check_key_fields(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateFault> {
    check_count(pairs.len())?;
    pairs.iter().try_for_each(|(k, f)| {
        check_key("key", k)?;
        check_key("map field", f)
    })
}

/// Runs one state call: checks, then the backend; the outcome goes back to the guest.
fn call<T>(
    store: &StoreContextMut<'_, HostState>,
    f: impl FnOnce(&mut dyn StateBackend) -> Result<T, StateFault>,
) -> Ret<T> {
    let outcome = match store.data().state() {
        Some(handle) => handle.with(f),
        None => Err(StateFault::internal("this instance has no state store (the job runs without one)")),
    };
    Ok((outcome.map_err(to_wit),))
}

/// Runs one state call that returns values (`what`, for messages): the
/// backend charges each copy to the instance's host memory budget before it
/// makes it, and the charge is held until the values have been handed to the
/// guest (released at the next host call or at the end of the guest call).
fn call_reading<T>(
    store: &mut StoreContextMut<'_, HostState>,
    what: &'static str,
    f: impl FnOnce(&mut dyn StateBackend, &mut HostMemoryCharge) -> Result<T, StateFault>,
) -> Ret<T> {
    let data = store.data_mut();
    data.release_returned();
    let mut mem = data.host_memory().empty(what);
    let outcome = match data.state() {
        Some(handle) => handle.with(|s| f(s, &mut mem)),
        None => Err(StateFault::internal("this instance has no state store (the job runs without one)")),
    };
    data.hold_returned(mem);
    Ok((outcome.map_err(to_wit),))
}

/// Links `flumen:dataflow/state` into `instance`.
pub(crate) fn link(instance: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    instance.func_wrap("value-get", |mut store: StoreContextMut<'_, HostState>, (name, key): (String, Vec<u8>)| {
        call_reading(&mut store, "state value-get", |s, mem| {
            check_name(&name)?;
            check_key("key", &key)?;
            s.value_get(&name, &key, mem)
        })
    })?;
    instance.func_wrap(
        "value-get-many",
        |mut store: StoreContextMut<'_, HostState>, (name, keys): (String, Vec<Vec<u8>>)| {
            call_reading(&mut store, "state value-get-many", |s, mem| {
                check_name(&name)?;
                check_keys(&keys)?;
                // The result's slots, before any value.
                mem.grow((keys.len() * std::mem::size_of::<Option<Vec<u8>>>()) as u64).map_err(over_budget)?;
                s.value_get_many(&name, &keys, mem)
            })
        },
    )?;
    instance.func_wrap(
        "value-set",
        |store: StoreContextMut<'_, HostState>, (name, key, value): (String, Vec<u8>, Vec<u8>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key("key", &key)?;
                check_value(&value)?;
                s.value_set(&name, &key, &value)
            })
        },
    )?;
    instance.func_wrap(
        "value-set-many",
        |store: StoreContextMut<'_, HostState>, (name, entries): (String, Entries)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key_values(&entries)?;
                s.value_set_many(&name, &entries)
            })
        },
    )?;
    instance.func_wrap("value-delete", |store: StoreContextMut<'_, HostState>, (name, key): (String, Vec<u8>)| {
        call(&store, |s| {
            check_name(&name)?;
            check_key("key", &key)?;
            s.value_delete(&name, &key)
        })
    })?;
    instance.func_wrap("list-get", |mut store: StoreContextMut<'_, HostState>, (name, key): (String, Vec<u8>)| {
        call_reading(&mut store, "state list-get", |s, mem| {
            check_name(&name)?;
            check_key("key", &key)?;
            s.list_get(&name, &key, mem)
        })
    })?;
    instance.func_wrap(
        "list-append",
        |store: StoreContextMut<'_, HostState>, (name, key, item): (String, Vec<u8>, Vec<u8>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key("key", &key)?;
                check_value(&item)?;
                s.list_append(&name, &key, &item)
            })
        },
    )?;
    instance.func_wrap("list-clear", |store: StoreContextMut<'_, HostState>, (name, key): (String, Vec<u8>)| {
        call(&store, |s| {
            check_name(&name)?;
            check_key("key", &key)?;
            s.list_clear(&name, &key)
        })
    })?;
    instance.func_wrap(
        "map-get",
        |mut store: StoreContextMut<'_, HostState>, (name, key, field): (String, Vec<u8>, Vec<u8>)| {
            call_reading(&mut store, "state map-get", |s, mem| {
                check_name(&name)?;
                check_key("key", &key)?;
                check_key("map field", &field)?;
                s.map_get(&name, &key, &field, mem)
            })
        },
    )?;
    instance.func_wrap(
        "map-put",
        |store: StoreContextMut<'_, HostState>, (name, key, field, value): (String, Vec<u8>, Vec<u8>, Vec<u8>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key("key", &key)?;
                check_key("map field", &field)?;
                check_value(&value)?;
                s.map_put(&name, &key, &field, &value)
            })
        },
    )?;
    instance.func_wrap(
        "map-remove",
        |store: StoreContextMut<'_, HostState>, (name, key, field): (String, Vec<u8>, Vec<u8>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key("key", &key)?;
                check_key("map field", &field)?;
                s.map_remove(&name, &key, &field)
            })
        },
    )?;
    instance.func_wrap(
        "map-entries",
        |mut store: StoreContextMut<'_, HostState>, (name, key): (String, Vec<u8>)| {
            call_reading(&mut store, "state map-entries", |s, mem| {
                check_name(&name)?;
                check_key("key", &key)?;
                s.map_entries(&name, &key, mem)
            })
        },
    )?;
    Ok(())
}

/// Nested lists a batch call returns: each key's items or entries.
type Lists = Vec<Vec<Vec<u8>>>;
type EntryLists = Vec<Entries>;
/// (key, field, value) triples of `map-put-many`.
type Triples = Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>;

/// Links the batch forms that `flumen:dataflow/state@0.2` adds: one host call
/// for a whole batch's keys, each checked as its single form is, run under
/// one lock of the subtask's store.
pub(crate) fn link_batch_forms(instance: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    instance.func_wrap(
        "value-delete-many",
        |store: StoreContextMut<'_, HostState>, (name, keys): (String, Vec<Vec<u8>>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_keys(&keys)?;
                keys.iter().try_for_each(|k| s.value_delete(&name, k))
            })
        },
    )?;
    instance.func_wrap(
        "list-get-many",
        |mut store: StoreContextMut<'_, HostState>, (name, keys): (String, Vec<Vec<u8>>)| {
            call_reading(&mut store, "state list-get-many", |s, mem| -> Result<Lists, StateFault> {
                check_name(&name)?;
                check_keys(&keys)?;
                mem.grow((keys.len() * std::mem::size_of::<Vec<Vec<u8>>>()) as u64).map_err(over_budget)?;
                keys.iter().map(|k| s.list_get(&name, k, mem)).collect()
            })
        },
    )?;
    instance.func_wrap(
        "list-append-many",
        |store: StoreContextMut<'_, HostState>, (name, items): (String, Entries)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key_values(&items)?;
                items.iter().try_for_each(|(k, v)| s.list_append(&name, k, v))
            })
        },
    )?;
    instance.func_wrap(
        "list-clear-many",
        |store: StoreContextMut<'_, HostState>, (name, keys): (String, Vec<Vec<u8>>)| {
            call(&store, |s| {
                check_name(&name)?;
                check_keys(&keys)?;
                keys.iter().try_for_each(|k| s.list_clear(&name, k))
            })
        },
    )?;
    instance.func_wrap(
        "map-get-many",
        |mut store: StoreContextMut<'_, HostState>, (name, fields): (String, Entries)| {
            call_reading(&mut store, "state map-get-many", |s, mem| -> Result<Vec<Option<Vec<u8>>>, StateFault> {
                check_name(&name)?;
                check_key_fields(&fields)?;
                mem.grow((fields.len() * std::mem::size_of::<Option<Vec<u8>>>()) as u64).map_err(over_budget)?;
                fields.iter().map(|(k, f)| s.map_get(&name, k, f, mem)).collect()
            })
        },
    )?;
    instance.func_wrap(
        "map-put-many",
        |store: StoreContextMut<'_, HostState>, (name, entries): (String, Triples)| {
            call(&store, |s| {
                check_name(&name)?;
                check_count(entries.len())?;
                entries.iter().try_for_each(|(k, f, v)| {
                    check_key("key", k)?;
                    check_key("map field", f)?;
                    check_value(v)
                })?;
                entries.iter().try_for_each(|(k, f, v)| s.map_put(&name, k, f, v))
            })
        },
    )?;
    instance.func_wrap(
        "map-remove-many",
        |store: StoreContextMut<'_, HostState>, (name, fields): (String, Entries)| {
            call(&store, |s| {
                check_name(&name)?;
                check_key_fields(&fields)?;
                fields.iter().try_for_each(|(k, f)| s.map_remove(&name, k, f))
            })
        },
    )?;
    instance.func_wrap(
        "map-entries-many",
        |mut store: StoreContextMut<'_, HostState>, (name, keys): (String, Vec<Vec<u8>>)| {
            call_reading(&mut store, "state map-entries-many", |s, mem| -> Result<EntryLists, StateFault> {
                check_name(&name)?;
                check_keys(&keys)?;
                mem.grow((keys.len() * std::mem::size_of::<Entries>()) as u64).map_err(over_budget)?;
                keys.iter().map(|k| s.map_entries(&name, k, mem)).collect()
            })
        },
    )?;
    Ok(())
}
