//! `UniqueMap`: a sorted map that refuses duplicate keys while decoding.
//! serde_yaml keeps the last of two equal keys, which would silently drop
//! a setting; this type makes that an error naming the key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueMap<K, V>(BTreeMap<K, V>);

impl<K, V> UniqueMap<K, V> {
    pub fn new() -> Self {
        UniqueMap(BTreeMap::new())
    }

    pub fn into_inner(self) -> BTreeMap<K, V> {
        self.0
    }

    /// Inherent so `skip_serializing_if` can name it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K, V> Default for UniqueMap<K, V> {
    fn default() -> Self {
        UniqueMap::new()
    }
}

impl<K, V> Deref for UniqueMap<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.0
    }
}

impl<K, V> DerefMut for UniqueMap<K, V> {
    fn deref_mut(&mut self) -> &mut BTreeMap<K, V> {
        &mut self.0
    }
}

impl<K, V> From<BTreeMap<K, V>> for UniqueMap<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        UniqueMap(map)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for UniqueMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        UniqueMap(iter.into_iter().collect())
    }
}

impl<'a, K, V> IntoIterator for &'a UniqueMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The message for a repeated key; decoding finds the key's line from it.
pub(crate) fn duplicate_key_message(key: &str) -> String {
    format!("duplicate key {key:?}")
}

struct UniqueMapVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for UniqueMapVisitor<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    type Value = UniqueMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some(key) = access.next_key::<K>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(duplicate_key_message(&key.to_string())));
            }
            let value = access.next_value()?;
            map.insert(key, value);
        }
        Ok(UniqueMap(map))
    }
}

impl<'de, K, V> Deserialize<'de> for UniqueMap<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}

impl<K: Serialize, V: Serialize> Serialize for UniqueMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates() {
        let err = serde_yaml::from_str::<UniqueMap<String, String>>("a: 1\nb: 2\na: 3\n").unwrap_err().to_string();
        assert!(err.contains("duplicate key \"a\""), "{err}");
        let ok: UniqueMap<String, String> = serde_yaml::from_str("b: 2\na: 1\n").unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
