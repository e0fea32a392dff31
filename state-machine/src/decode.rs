//! Decoding the persistent tables without trusting a declared length.
//!
//! A snapshot comes from disk or from a leader, so its bytes are input:
//! imbl's own `Deserialize` reserves a `Vec` of the length the encoding
//! declares before reading a single entry, and a damaged length panicked
//! with a capacity overflow (node/tests/fuzz.rs `snapshots`). These
//! visitors insert entry by entry instead, so a false length fails when
//! the bytes run out, as serde's `BTreeMap` did. Used through
//! `#[serde(deserialize_with = …)]`; serialization stays imbl's (a map or a
//! sequence, the same bytes as the std collections).

use std::fmt;
use std::marker::PhantomData;

use imbl::{OrdMap, OrdSet};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// An [`OrdMap`] read entry by entry.
pub(crate) fn ord_map<'de, D, K, V>(deserializer: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    struct MapVisitor<K, V>(PhantomData<(K, V)>);
    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = OrdMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = OrdMap::new();
            while let Some((k, v)) = access.next_entry()? {
                map.insert(k, v);
            }
            Ok(map)
        }
    }
    deserializer.deserialize_map(MapVisitor(PhantomData))
}

/// An [`OrdSet`] read element by element.
pub(crate) fn ord_set<'de, D, T>(deserializer: D) -> Result<OrdSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord + Clone,
{
    struct SetVisitor<T>(PhantomData<T>);
    impl<'de, T> Visitor<'de> for SetVisitor<T>
    where
        T: Deserialize<'de> + Ord + Clone,
    {
        type Value = OrdSet<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut set = OrdSet::new();
            while let Some(element) = access.next_element()? {
                set.insert(element);
            }
            Ok(set)
        }
    }
    deserializer.deserialize_seq(SetVisitor(PhantomData))
}

/// A [`SmallVec`] read element by element (smallvec's own `Deserialize`
/// reserves the declared length first).
pub(crate) fn small_vec<'de, D, A>(deserializer: D) -> Result<SmallVec<A>, D::Error>
where
    D: Deserializer<'de>,
    A: smallvec::Array,
    A::Item: Deserialize<'de>,
{
    struct VecVisitor<A>(PhantomData<A>);
    impl<'de, A> Visitor<'de> for VecVisitor<A>
    where
        A: smallvec::Array,
        A::Item: Deserialize<'de>,
    {
        type Value = SmallVec<A>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut access: S) -> Result<Self::Value, S::Error> {
            let mut items = SmallVec::new();
            while let Some(item) = access.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(VecVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Tables {
        #[serde(deserialize_with = "ord_map")]
        _map: OrdMap<u64, u64>,
    }

    #[derive(serde::Deserialize, Debug)]
    struct Sets {
        #[serde(deserialize_with = "ord_set")]
        _set: OrdSet<u64>,
    }

    #[derive(serde::Deserialize, Debug)]
    struct Holders {
        #[serde(deserialize_with = "small_vec")]
        _items: SmallVec<[u64; 1]>,
    }

    // A declared length far beyond the bytes is an error, not a panic or
    // a huge allocation.
    #[test]
    fn a_false_length_is_an_error() {
        let huge = u64::MAX.to_le_bytes();
        assert!(bincode::deserialize::<Tables>(&huge).is_err());
        assert!(bincode::deserialize::<Sets>(&huge).is_err());
        assert!(bincode::deserialize::<Holders>(&huge).is_err());
        let mut two = 2u64.to_le_bytes().to_vec();
        two.extend_from_slice(&7u64.to_le_bytes());
        assert!(bincode::deserialize::<Sets>(&two).is_err(), "one element of two");
    }
}
