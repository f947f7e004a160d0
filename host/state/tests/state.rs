//! Keyed state through the public API: semantics, isolation, limits, snapshots and restore.

use std::fs;
use std::path::Path;

use flumen_state::{
    OperatorState, STATE_KEY_BYTES_MAX, STATE_NAME_BYTES_MAX, STATE_VALUE_BYTES_MAX, StateError, StateFile, StateStore,
    should_write_full,
};
use tempfile::TempDir;

fn store() -> (TempDir, StateStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(&dir.path().join("work")).expect("open state store");
    (dir, store)
}

fn files_dir(dir: &TempDir) -> std::path::PathBuf {
    let files = dir.path().join("files");
    fs::create_dir_all(&files).expect("files dir");
    files
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn value_state_set_get_overwrite_delete() {
    let (_dir, store) = store();
    let mut s = store.operator("count", 0).unwrap();
    assert_eq!(s.value_get("n", b"k").unwrap(), None);
    s.value_set("n", b"k", b"1").unwrap();
    assert_eq!(s.value_get("n", b"k").unwrap(), Some(b("1")));
    s.value_set("n", b"k", b"2").unwrap();
    assert_eq!(s.value_get("n", b"k").unwrap(), Some(b("2")));
    assert_eq!(s.value_get("other", b"k").unwrap(), None, "names are separate");
    s.value_set("n", b"", b"empty key").unwrap();
    s.value_set("n", b"e", b"").unwrap();
    assert_eq!(s.value_get("n", b"").unwrap(), Some(b("empty key")));
    assert_eq!(s.value_get("n", b"e").unwrap(), Some(Vec::new()), "an empty value is not an absent one");
    s.value_delete("n", b"k").unwrap();
    assert_eq!(s.value_get("n", b"k").unwrap(), None);
    s.value_delete("n", b"never-set").unwrap();

    s.value_set_many("m", &[(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))]).unwrap();
    assert_eq!(
        s.value_get_many("m", &[b("a"), b("b"), b("c")]).unwrap(),
        vec![Some(b("3")), Some(b("2")), None],
        "the last write of a key in a batch wins"
    );
}

#[test]
fn list_state_keeps_append_order_and_clears() {
    let (_dir, store) = store();
    let mut s = store.operator("window", 0).unwrap();
    let items: Vec<Vec<u8>> = (0..300u32).map(|i| format!("item{i}").into_bytes()).collect();
    for item in &items {
        s.list_append("l", b"k", item).unwrap();
    }
    s.list_append("l", b"k2", b"other list").unwrap();
    s.list_append("l", b"", b"empty key").unwrap();
    assert_eq!(s.list_get("l", b"k").unwrap(), items, "append order across 256 appends");
    assert_eq!(s.list_get("l", b"k2").unwrap(), vec![b("other list")], "key k is not a prefix of k2's list");
    assert_eq!(s.list_get("l", b"").unwrap(), vec![b("empty key")]);
    assert_eq!(s.list_get("l", b"nothing").unwrap(), Vec::<Vec<u8>>::new());
    s.list_append("l", b"k", b"").unwrap();
    assert_eq!(s.list_get("l", b"k").unwrap().last(), Some(&Vec::new()));

    s.list_clear("l", b"k").unwrap();
    assert!(s.list_get("l", b"k").unwrap().is_empty());
    assert_eq!(s.list_get("l", b"k2").unwrap(), vec![b("other list")], "clearing one list leaves the others");
    s.list_append("l", b"k", b"again").unwrap();
    s.list_append("l", b"k", b"and again").unwrap();
    assert_eq!(s.list_get("l", b"k").unwrap(), vec![b("again"), b("and again")]);
}

#[test]
fn map_state_orders_fields_by_bytes() {
    let (_dir, store) = store();
    let mut s = store.operator("join", 0).unwrap();
    for field in ["b", "a", "ab", "\u{ff}", "", "B"] {
        s.map_put("m", b"k", field.as_bytes(), format!("v{field}").as_bytes()).unwrap();
    }
    s.map_put("m", b"k", b"a", b"overwritten").unwrap();
    s.map_put("m", b"k2", b"a", b"other map").unwrap();
    s.map_put("m2", b"k", b"a", b"other name").unwrap();
    let fields: Vec<Vec<u8>> = s.map_entries("m", b"k").unwrap().into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, vec![b(""), b("B"), b("a"), b("ab"), b("b"), b("\u{ff}")]);
    assert_eq!(s.map_get("m", b"k", b"a").unwrap(), Some(b("overwritten")));
    assert_eq!(s.map_get("m", b"k", b"zz").unwrap(), None);
    s.map_remove("m", b"k", b"a").unwrap();
    assert_eq!(s.map_get("m", b"k", b"a").unwrap(), None);
    assert_eq!(s.map_entries("m", b"k").unwrap().len(), 5);
    assert_eq!(s.map_entries("m", b"k2").unwrap(), vec![(b("a"), b("other map"))]);
    assert_eq!(s.map_entries("m2", b"k").unwrap(), vec![(b("a"), b("other name"))]);
}

#[test]
fn subtasks_and_operators_are_isolated() {
    let (_dir, store) = store();
    let mut s0 = store.operator("count", 0).unwrap();
    let mut s1 = store.operator("count", 1).unwrap();
    let mut s128 = store.operator("count", 128).unwrap();
    let mut other = store.operator("count ", 0).unwrap();
    let mut slashed = store.operator("a/b:c\u{0}", 0).unwrap();
    s0.value_set("n", b"k", b"zero").unwrap();
    s1.value_set("n", b"k", b"one").unwrap();
    s128.value_set("n", b"k", b"128").unwrap();
    other.value_set("n", b"k", b"other").unwrap();
    slashed.value_set("n", b"k", b"slashed").unwrap();
    s0.list_append("l", b"k", b"zero").unwrap();
    s1.map_put("m", b"k", b"f", b"one").unwrap();
    assert_eq!(s0.value_get("n", b"k").unwrap(), Some(b("zero")));
    assert_eq!(s1.value_get("n", b"k").unwrap(), Some(b("one")));
    assert_eq!(s128.value_get("n", b"k").unwrap(), Some(b("128")));
    assert_eq!(other.value_get("n", b"k").unwrap(), Some(b("other")));
    assert_eq!(slashed.value_get("n", b"k").unwrap(), Some(b("slashed")));
    assert!(s1.list_get("l", b"k").unwrap().is_empty());
    assert!(s0.map_entries("m", b"k").unwrap().is_empty());

    s0.clear().unwrap();
    assert_eq!(s0.value_get("n", b"k").unwrap(), None);
    assert!(s0.list_get("l", b"k").unwrap().is_empty());
    assert_eq!(s1.value_get("n", b"k").unwrap(), Some(b("one")), "clearing subtask 0 leaves subtask 1");
    assert_eq!(s128.value_get("n", b"k").unwrap(), Some(b("128")));
    assert_eq!(s1.map_get("m", b"k", b"f").unwrap(), Some(b("one")));
    s1.clear().unwrap();
    assert_eq!(s128.value_get("n", b"k").unwrap(), Some(b("128")), "subtask 1's prefix is not a prefix of 128's");
    assert_eq!(other.value_get("n", b"k").unwrap(), Some(b("other")), "and other operators");
}

#[test]
fn one_handle_per_subtask_and_tracking_survives_reopening() {
    let (_dir, store) = store();
    let mut s = store.operator("count", 3).unwrap();
    s.value_set("n", b"a", b"1").unwrap();
    s.value_set("n", b"b", b"1").unwrap();
    let err = store.operator("count", 3).unwrap_err();
    assert!(matches!(&err, StateError::Store(m) if m.contains("count[3]")), "{err}");
    drop(s);
    let s = store.operator("count", 3).unwrap();
    assert_eq!(s.pending_changes(), 2, "changes made through the dropped handle are still tracked");
    assert_eq!(s.value_get("n", b"a").unwrap(), Some(b("1")));
}

#[test]
fn opening_drops_what_a_previous_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    {
        let store = StateStore::open(&work).unwrap();
        store.operator("count", 0).unwrap().value_set("n", b"k", b"stale").unwrap();
    }
    let store = StateStore::open(&work).unwrap();
    assert_eq!(store.operator("count", 0).unwrap().value_get("n", b"k").unwrap(), None);
}

#[test]
fn limits_are_refused_with_a_clear_message() {
    let (_dir, store) = store();
    let mut s = store.operator("op", 0).unwrap();
    let name_max = "n".repeat(STATE_NAME_BYTES_MAX);
    let key_max = vec![7u8; STATE_KEY_BYTES_MAX];
    // Everything at its limit at once still fits fjall's key limit.
    s.map_put(&name_max, &key_max, &key_max, b"v").unwrap();
    assert_eq!(s.map_entries(&name_max, &key_max).unwrap(), vec![(key_max.clone(), b("v"))]);
    s.list_append(&name_max, &key_max, b"v").unwrap();
    s.value_set("n", b"big", &vec![1u8; STATE_VALUE_BYTES_MAX]).unwrap();

    let long_name = "n".repeat(STATE_NAME_BYTES_MAX + 1);
    let long_key = vec![7u8; STATE_KEY_BYTES_MAX + 1];
    let huge = vec![0u8; STATE_VALUE_BYTES_MAX + 1];
    let refusals = [
        ("name", s.value_set(&long_name, b"k", b"v")),
        ("name", s.value_get(&long_name, b"k").map(|_| ())),
        ("key", s.value_set("n", &long_key, b"v")),
        ("key", s.list_append("n", &long_key, b"v")),
        ("key", s.map_get("n", &long_key, b"f").map(|_| ())),
        ("map field", s.map_put("n", b"k", &long_key, b"v")),
        ("value", s.value_set("n", b"k", &huge)),
        ("value", s.list_append("n", b"k", &huge)),
        ("value", s.map_put("n", b"k", b"f", &huge)),
        ("value", s.value_set_many("n", &[(b("ok"), b("v")), (b("k"), huge.clone())])),
        ("key", s.value_get_many("n", &[b("ok"), long_key.clone()]).map(|_| ())),
    ];
    for (what, result) in refusals {
        match result {
            Err(StateError::Limit(message)) => assert!(message.contains(what), "{what}: {message}"),
            other => panic!("{what}: expected a limit error, got {other:?}"),
        }
    }
    assert_eq!(s.value_get("n", b"ok").unwrap(), None, "a refused batch writes nothing");
}

#[test]
fn delta_snapshot_holds_only_the_changes() {
    let (dir, store) = store();
    let files = files_dir(&dir);
    let mut s = store.operator("count", 0).unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        (0..10_000u64).map(|i| (i.to_be_bytes().to_vec(), format!("value-{i:08}").into_bytes())).collect();
    s.value_set_many("n", &entries).unwrap();
    assert_eq!(s.pending_changes(), 10_000);
    let full = s.snapshot(&files, 1, true).unwrap().unwrap();
    assert!(full.full && full.checkpoint == 1);
    assert_eq!(s.pending_changes(), 0);
    assert_eq!(s.snapshot(&files, 2, false).unwrap(), None, "no changes: no delta");

    for i in 0..10u64 {
        s.value_set("n", &(i * 1000).to_be_bytes(), b"changed").unwrap();
        s.value_set("n", &(i * 1000).to_be_bytes(), b"changed twice").unwrap();
    }
    assert_eq!(s.pending_changes(), 10);
    let delta = s.snapshot(&files, 3, false).unwrap().unwrap();
    assert!(!delta.full);
    assert!(delta.bytes * 200 < full.bytes, "delta of 10 changes is {} bytes, full is {}", delta.bytes, full.bytes);
    assert_eq!(fs::metadata(files.join(&delta.name)).unwrap().len(), delta.bytes);
    assert_eq!(s.snapshot_bytes(), full.bytes + delta.bytes);
    assert!(!should_write_full(&[full.clone(), delta.clone()]));
}

/// Everything observable for a fixed set of names and keys, to compare two states.
fn observe(s: &OperatorState) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["a", "b", "c", "d", "gone"] {
        let k = key.as_bytes();
        out.push(format!("value {key}: {:?}", s.value_get("v", k).expect("value_get")));
        out.push(format!("list {key}: {:?}", s.list_get("l", k).expect("list_get")));
        out.push(format!("map {key}: {:?}", s.map_entries("m", k).expect("map_entries")));
    }
    out
}

#[test]
fn full_and_deltas_restore_exactly_into_a_fresh_store() {
    let (dir, store) = store();
    let files = files_dir(&dir);
    let mut s = store.operator("agg", 2).unwrap();
    let mut chain: Vec<StateFile> = Vec::new();

    for key in ["a", "b", "c", "gone"] {
        s.value_set("v", key.as_bytes(), format!("v-{key}").as_bytes()).unwrap();
        s.list_append("l", key.as_bytes(), b"1").unwrap();
        s.list_append("l", key.as_bytes(), b"2").unwrap();
        s.map_put("m", key.as_bytes(), b"x", b"1").unwrap();
        s.map_put("m", key.as_bytes(), b"y", b"2").unwrap();
    }
    chain.extend(s.snapshot(&files, 1, true).unwrap());

    s.value_delete("v", b"gone").unwrap();
    s.list_clear("l", b"gone").unwrap();
    s.map_remove("m", b"gone", b"x").unwrap();
    s.map_remove("m", b"gone", b"y").unwrap();
    s.value_set("v", b"a", b"v-a2").unwrap();
    s.list_append("l", b"a", b"3").unwrap();
    s.map_put("m", b"a", b"z", b"3").unwrap();
    s.value_set("v", b"d", b"created then deleted").unwrap();
    s.value_delete("v", b"d").unwrap();
    chain.extend(s.snapshot(&files, 2, false).unwrap());

    assert_eq!(s.snapshot(&files, 3, false).unwrap(), None);

    s.list_clear("l", b"b").unwrap();
    s.list_append("l", b"b", b"after clear").unwrap();
    s.map_put("m", b"c", b"x", b"overwritten").unwrap();
    s.value_set("v", b"gone", b"back").unwrap();
    s.value_delete("v", b"gone").unwrap();
    chain.extend(s.snapshot(&files, 4, false).unwrap());
    assert_eq!(chain.len(), 3);
    assert_eq!(chain.iter().map(|f| f.full).collect::<Vec<_>>(), [true, false, false]);

    let expected = observe(&s);
    assert!(expected.contains(&"list b: [[97, 102, 116, 101, 114, 32, 99, 108, 101, 97, 114]]".to_owned()));
    drop(s);

    // A fresh process, restoring into another subtask index, over leftover entries.
    let (_dir2, fresh) = self::store();
    let mut r = fresh.operator("agg", 0).unwrap();
    r.value_set("v", b"c", b"leftover").unwrap();
    r.list_append("l", b"d", b"leftover").unwrap();
    r.restore(&files, &chain).unwrap();
    assert_eq!(observe(&r), expected);
    assert_eq!(r.pending_changes(), 0);

    // Appends after a restore still go to the end of restored lists.
    r.list_append("l", b"a", b"4").unwrap();
    assert_eq!(r.list_get("l", b"a").unwrap(), vec![b("1"), b("2"), b("3"), b("4")]);
    assert_eq!(r.pending_changes(), 1);

    // Restoring only the full snapshot gives the state as of checkpoint 1.
    r.restore(&files, &chain[..1]).unwrap();
    assert_eq!(r.value_get("v", b"gone").unwrap(), Some(b("v-gone")));
    assert_eq!(r.list_get("l", b"a").unwrap(), vec![b("1"), b("2")]);
}

#[test]
fn clear_then_delta_records_the_removals() {
    let (dir, store) = store();
    let files = files_dir(&dir);
    let mut s = store.operator("op", 0).unwrap();
    s.value_set("v", b"a", b"1").unwrap();
    s.map_put("m", b"a", b"f", b"1").unwrap();
    let full = s.snapshot(&files, 1, true).unwrap().unwrap();
    s.clear().unwrap();
    assert_eq!(s.pending_changes(), 2);
    let delta = s.snapshot(&files, 2, false).unwrap().unwrap();
    let (_dir2, fresh) = self::store();
    let mut r = fresh.operator("op", 0).unwrap();
    r.restore(&files, &[full, delta]).unwrap();
    assert_eq!(r.value_get("v", b"a").unwrap(), None);
    assert!(r.map_entries("m", b"a").unwrap().is_empty());
}

fn snapshot_pair(files: &Path) -> (TempDir, OperatorState, Vec<StateFile>) {
    let (dir, store) = store();
    let mut s = store.operator("op", 0).expect("operator");
    for i in 0..100u32 {
        s.value_set("v", &i.to_be_bytes(), b"some value").expect("set");
    }
    let full = s.snapshot(files, 1, true).expect("snapshot").expect("full file");
    s.value_set("v", b"x", b"y").expect("set");
    let delta = s.snapshot(files, 2, false).expect("snapshot").expect("delta file");
    (dir, s, vec![full, delta])
}

#[test]
fn restore_detects_a_flipped_bit_and_a_truncated_file() {
    let (dir, _store) = store();
    let files = files_dir(&dir);
    let (_work, mut s, chain) = snapshot_pair(&files);
    let before = observe(&s);

    for damage in ["flip", "truncate", "delete"] {
        let path = files.join(&chain[1].name);
        let original = fs::read(&path).unwrap();
        match damage {
            "flip" => {
                let mut bytes = original.clone();
                bytes[original.len() / 2] ^= 0x10;
                fs::write(&path, bytes).unwrap();
            }
            "truncate" => fs::write(&path, &original[..original.len() - 3]).unwrap(),
            _ => fs::remove_file(&path).unwrap(),
        }
        let err = s.restore(&files, &chain).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{damage}: {err}");
        assert!(err.to_string().contains(&chain[1].name), "{damage}: the error names the file: {err}");
        assert_eq!(observe(&s), before, "{damage}: nothing is cleared before the chain verified");
        fs::write(&path, &original).unwrap();
    }
    s.restore(&files, &chain).unwrap();

    let err = s.restore(&files, &chain[1..]).unwrap_err();
    assert!(err.to_string().contains("must start with a full snapshot"), "{err}");

    // A file described as another checkpoint than its header says.
    let mut lying = chain.clone();
    lying[1].checkpoint = 9;
    let err = s.restore(&files, &lying).unwrap_err();
    assert!(matches!(&err, StateError::Corrupt { message, .. } if message.contains("header")), "{err}");
}

/// Reads that return many values ask before copying each one, and stop at
/// the first refusal: a caller with a budget never holds more than it allowed.
#[test]
fn admitted_reads_ask_before_each_copy_and_stop_at_a_refusal() {
    let (_dir, store) = store();
    let mut s = store.operator("big", 0).unwrap();
    let value = vec![7u8; 1000];
    s.value_set("v", b"k", &value).unwrap();
    for i in 0..10u8 {
        s.list_append("l", b"k", &value).unwrap();
        s.map_put("m", b"k", &[i], &value).unwrap();
    }
    // A budget of 3,500 bytes: three values fit, the fourth is refused.
    fn budget(asked: &mut Vec<usize>) -> impl FnMut(usize) -> Result<(), StateError> + '_ {
        let mut left = 3500usize;
        move |n: usize| {
            asked.push(n);
            left = left.checked_sub(n).ok_or_else(|| StateError::Limit("over budget".into()))?;
            Ok(())
        }
    }
    let keys = vec![b("k"); 100];
    let mut asked = Vec::new();
    let err = s.value_get_many_admitted("v", &keys, &mut budget(&mut asked)).unwrap_err();
    assert!(matches!(err, StateError::Limit(_)), "{err}");
    assert_eq!(asked, vec![1000; 4], "stops at the first refusal, not after reading all 100");

    let mut asked = Vec::new();
    assert!(s.list_get_admitted("l", b"k", &mut budget(&mut asked)).is_err());
    assert_eq!(asked, vec![1000; 4]);

    let mut asked = Vec::new();
    assert!(s.map_entries_admitted("m", b"k", &mut budget(&mut asked)).is_err());
    assert_eq!(asked, vec![1001; 4], "an entry counts its field and its value");

    let mut asked = Vec::new();
    assert_eq!(s.value_get_admitted("v", b"k", &mut budget(&mut asked)).unwrap(), Some(value.clone()));
    assert_eq!(s.map_get_admitted("m", b"k", &[1], &mut budget(&mut asked)).unwrap(), Some(value.clone()));
    assert_eq!(asked, vec![1000, 1000]);
    // Within the budget, the admitted reads return what the plain ones do.
    let mut all = |_: usize| -> Result<(), StateError> { Ok(()) };
    assert_eq!(s.list_get_admitted("l", b"k", &mut all).unwrap(), s.list_get("l", b"k").unwrap());
    assert_eq!(s.map_entries_admitted("m", b"k", &mut all).unwrap(), s.map_entries("m", b"k").unwrap());
}

/// A model of one subtask's state: what every read must return.
#[derive(Default, Clone, PartialEq, Debug)]
struct Model {
    values: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    lists: std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    maps: std::collections::BTreeMap<Vec<u8>, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

fn check_against(s: &OperatorState, model: &Model, keys: u64) {
    for k in 0..keys {
        let key = k.to_be_bytes();
        assert_eq!(s.value_get("v", &key).expect("value_get"), model.values.get(&key[..]).cloned(), "value {k}");
        assert_eq!(
            s.list_get("l", &key).expect("list_get"),
            model.lists.get(&key[..]).cloned().unwrap_or_default(),
            "list {k}"
        );
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            model.maps.get(&key[..]).map(|m| m.clone().into_iter().collect()).unwrap_or_default();
        assert_eq!(s.map_entries("m", &key).expect("map_entries"), entries, "map {k}");
    }
}

/// Random writes, deletes, clears and reads through write-back caches of several budgets
/// (none, smaller than one value, a few entries, everything), snapshotted every few hundred
/// operations: every read agrees with a model, and the chain restores into a fresh store to the
/// model's state at each snapshot.
#[test]
fn the_write_back_cache_agrees_with_a_model_under_every_budget() {
    for budget in [0usize, 100, 4 << 10, 64 << 20] {
        let (dir, store) = store();
        let files = files_dir(&dir);
        let mut s = store.operator("cached", 1).unwrap();
        s.set_cache_budget(budget).unwrap();
        let mut model = Model::default();
        let mut chain: Vec<StateFile> = Vec::new();
        let mut snapshots: Vec<(usize, Model)> = Vec::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ budget as u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        const KEYS: u64 = 24;
        for step in 0..3000u64 {
            let k = next(KEYS);
            let key = k.to_be_bytes().to_vec();
            let value = format!("{step}-{}", "x".repeat(next(300) as usize)).into_bytes();
            match next(10) {
                0 | 1 => {
                    s.value_set("v", &key, &value).unwrap();
                    model.values.insert(key, value);
                }
                2 => {
                    s.value_delete("v", &key).unwrap();
                    model.values.remove(&key);
                }
                3 => {
                    s.list_append("l", &key, &value).unwrap();
                    model.lists.entry(key).or_default().push(value);
                }
                4 => {
                    s.list_clear("l", &key).unwrap();
                    model.lists.remove(&key);
                }
                5 => {
                    let field = next(4).to_be_bytes().to_vec();
                    s.map_put("m", &key, &field, &value).unwrap();
                    model.maps.entry(key).or_default().insert(field, value);
                }
                6 => {
                    let field = next(4).to_be_bytes().to_vec();
                    s.map_remove("m", &key, &field).unwrap();
                    if let Some(m) = model.maps.get_mut(&key) {
                        m.remove(&field);
                        if m.is_empty() {
                            model.maps.remove(&key);
                        }
                    }
                }
                _ => {
                    assert_eq!(s.value_get("v", &key).unwrap(), model.values.get(&key).cloned(), "step {step}");
                    let list = model.lists.get(&key).cloned().unwrap_or_default();
                    assert_eq!(s.list_get("l", &key).unwrap(), list, "step {step}");
                }
            }
            if budget > 0 {
                assert!(s.cache_bytes() <= budget.max(1024), "step {step}: {} bytes cached", s.cache_bytes());
            }
            if step % 500 == 499 {
                let checkpoint = chain.len() as u64 + 1;
                chain.extend(s.snapshot(&files, checkpoint, chain.is_empty()).unwrap());
                snapshots.push((chain.len(), model.clone()));
            }
        }
        check_against(&s, &model, KEYS);
        drop(s);
        let (_dir2, fresh) = self::store();
        let mut r = fresh.operator("cached", 1).unwrap();
        for (len, expected) in &snapshots {
            r.restore(&files, &chain[..*len]).unwrap();
            check_against(&r, expected, KEYS);
        }
    }
}

/// Keys created and removed between two snapshots are in neither state: the delta leaves them
/// out instead of writing a tombstone for each.
#[test]
fn a_delta_leaves_out_keys_created_and_removed_between_snapshots() {
    let (dir, store) = store();
    let files = files_dir(&dir);
    let mut s = store.operator("windows", 0).unwrap();
    s.value_set("v", b"kept", b"1").unwrap();
    let full = s.snapshot(&files, 1, true).unwrap().unwrap();
    // A window opened and closed within one checkpoint interval, 10,000 times over.
    for i in 0..10_000u64 {
        let key = i.to_be_bytes();
        assert_eq!(s.value_get("w", &key).unwrap(), None);
        s.value_set("w", &key, b"open window").unwrap();
        s.list_append("l", &key, b"event").unwrap();
        s.value_delete("w", &key).unwrap();
        s.list_clear("l", &key).unwrap();
    }
    s.value_delete("v", b"kept").unwrap();
    let delta = s.snapshot(&files, 2, false).unwrap().unwrap();
    // One tombstone (`kept`) and nothing of the 20,000 transient keys.
    assert!(delta.bytes < 200, "delta of one tombstone is {} bytes", delta.bytes);
    let (_dir2, fresh) = self::store();
    let mut r = fresh.operator("windows", 0).unwrap();
    r.value_set("w", &7u64.to_be_bytes(), b"leftover").unwrap();
    r.restore(&files, &[full, delta]).unwrap();
    assert_eq!(r.value_get("v", b"kept").unwrap(), None);
    assert_eq!(r.value_get("w", &7u64.to_be_bytes()).unwrap(), None);
}
