//! The difference between what a map holds and what it should hold; pure,
//! so the plan-to-map update is tested without a kernel.
use std::collections::BTreeMap;

/// What turns one map's contents into another's: entries to insert or
/// overwrite, then keys to remove. Entries equal on both sides are in
/// neither, so lookups of them never see a gap.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes<'a, K, V> {
    pub upserts: Vec<(&'a K, &'a V)>,
    pub removals: Vec<&'a K>,
}

/// The changes from `current` to `wanted`; pure, so the plan-to-map
/// update is tested without a kernel.
pub fn diff<'a, K: Ord, V: PartialEq>(
    current: &'a BTreeMap<K, V>,
    wanted: &'a BTreeMap<K, V>,
) -> Changes<'a, K, V> {
    Changes {
        upserts: wanted
            .iter()
            .filter(|(key, value)| current.get(key) != Some(value))
            .collect(),
        removals: current
            .keys()
            .filter(|key| !wanted.contains_key(key))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_writes_new_and_changed_entries_and_removes_gone_ones_only() {
        let current = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let wanted = BTreeMap::from([(1, 'a'), (2, 'B'), (4, 'd')]);
        let changes = diff(&current, &wanted);
        assert_eq!(changes.upserts, vec![(&2, &'B'), (&4, &'d')]);
        assert_eq!(changes.removals, vec![&3]);
    }

    #[test]
    fn equal_contents_need_no_write() {
        let same = BTreeMap::from([(1, 'a'), (2, 'b')]);
        let changes = diff(&same, &same);
        assert!(changes.upserts.is_empty() && changes.removals.is_empty());
        let empty = BTreeMap::new();
        let changes = diff(&same, &empty);
        assert_eq!(changes.removals, vec![&1, &2]);
        let changes = diff(&empty, &same);
        assert_eq!(changes.upserts.len(), 2);
    }
}
