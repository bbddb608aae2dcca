//! An in-memory [`MapStore`] for unit tests: every map a `BTreeMap`, every
//! write recorded in order, and a write that can be made to fail, so the
//! order rules of [`super::sync`] and the daemon's rollback are tested
//! without a kernel (aya's `sys/fake.rs` plays this part for syscalls).
use std::{any::Any, collections::BTreeMap};

use aya::{Pod, maps::MapError};
use gateway_common::{PolicyKey, PolicyTable, PolicyValue, map_names};

use super::{DataplaneError, MapStore};

/// One write, in the order it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The map written.
    pub map: &'static str,
    /// What was done to it.
    pub op: Op,
}

/// A kind of write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Remove,
    /// An array slot set, by index.
    Set(u32),
}

/// Maps held in memory, by name.
#[derive(Default)]
pub struct FakeMaps {
    /// `BTreeMap<K, V>` per hash map, `BTreeMap<u32, V>` per array.
    maps: BTreeMap<&'static str, Box<dyn Any>>,
    /// Every write made, in order (failed ones included).
    pub writes: Vec<Write>,
    /// The write (counted from 0 over all maps) that fails, if any.
    pub fail_write: Option<usize>,
    /// `POLICY_TABLES` by slot (boxed: a value is 512 KiB).
    pub policy_tables: BTreeMap<u32, Box<PolicyTable>>,
}

impl FakeMaps {
    /// The hash map or array `name` as it stands (empty if never written).
    pub fn contents<K: Pod + Ord, V: Pod>(&self, name: &'static str) -> BTreeMap<K, V> {
        self.maps
            .get(name)
            .and_then(|map| map.downcast_ref::<BTreeMap<K, V>>())
            .cloned()
            .unwrap_or_default()
    }

    /// The writes made to `name`, in order.
    pub fn writes_to(&self, name: &str) -> Vec<Op> {
        self.writes
            .iter()
            .filter(|w| w.map == name)
            .map(|w| w.op)
            .collect()
    }

    /// Position of the first write to `name` of kind `op` (any index for
    /// `Set`), if any.
    pub fn first(&self, name: &str, op: Op) -> Option<usize> {
        self.writes.iter().position(|w| {
            w.map == name
                && match (w.op, op) {
                    (Op::Set(_), Op::Set(_)) => true,
                    (a, b) => a == b,
                }
        })
    }

    /// Position of the last write to `name` of kind `op`, if any.
    pub fn last(&self, name: &str, op: Op) -> Option<usize> {
        self.writes.iter().rposition(|w| {
            w.map == name
                && match (w.op, op) {
                    (Op::Set(_), Op::Set(_)) => true,
                    (a, b) => a == b,
                }
        })
    }

    fn table<K: Pod + Ord, V: Pod>(&mut self, name: &'static str) -> &mut BTreeMap<K, V> {
        self.maps
            .entry(name)
            .or_insert_with(|| Box::new(BTreeMap::<K, V>::new()))
            .downcast_mut::<BTreeMap<K, V>>()
            .unwrap_or_else(|| panic!("map {name} used with two types"))
    }

    /// Records a write, failing it if it is the one to fail.
    fn record(&mut self, map: &'static str, op: Op) -> Result<(), DataplaneError> {
        let failing = self.fail_write == Some(self.writes.len());
        self.writes.push(Write { map, op });
        if failing {
            return Err(DataplaneError::Map {
                name: map,
                source: MapError::KeyNotFound,
            });
        }
        Ok(())
    }
}

impl MapStore for FakeMaps {
    fn read_all<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, DataplaneError> {
        Ok(self.table::<K, V>(name).clone())
    }

    fn upsert<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
        value: V,
    ) -> Result<(), DataplaneError> {
        self.record(name, Op::Upsert)?;
        self.table::<K, V>(name).insert(*key, value);
        Ok(())
    }

    fn remove<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<(), DataplaneError> {
        self.record(name, Op::Remove)?;
        self.table::<K, V>(name).remove(key);
        Ok(())
    }

    fn get_index<V: Pod + Default>(
        &mut self,
        name: &'static str,
        index: u32,
    ) -> Result<V, DataplaneError> {
        Ok(self
            .table::<u32, V>(name)
            .get(&index)
            .copied()
            .unwrap_or_default())
    }

    fn set_index<V: Pod>(
        &mut self,
        name: &'static str,
        index: u32,
        value: V,
    ) -> Result<(), DataplaneError> {
        self.record(name, Op::Set(index))?;
        self.table::<u32, V>(name).insert(index, value);
        Ok(())
    }

    fn read_policy(
        &mut self,
        name: &'static str,
    ) -> Result<BTreeMap<PolicyKey, PolicyValue>, DataplaneError> {
        self.read_all(name)
    }

    fn upsert_policy(
        &mut self,
        name: &'static str,
        key: &PolicyKey,
        value: PolicyValue,
    ) -> Result<(), DataplaneError> {
        self.upsert(name, key, value)
    }

    fn remove_policy(&mut self, name: &'static str, key: &PolicyKey) -> Result<(), DataplaneError> {
        self.remove::<PolicyKey, PolicyValue>(name, key)
    }

    fn write_policy_table(&mut self, slot: u32, table: &PolicyTable) -> Result<(), DataplaneError> {
        self.record(map_names::POLICY_TABLES, Op::Set(slot))?;
        let mut copy = PolicyTable::zeroed();
        copy.roots.copy_from_slice(&table.roots);
        copy.pool.copy_from_slice(&table.pool);
        self.policy_tables.insert(slot, copy);
        Ok(())
    }
}
