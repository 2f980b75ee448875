//! Finds the line and column of a node by its path, for errors serde_yaml
//! positions imprecisely (a duplicate key is reported at the start of its
//! mapping) or not at all.
//!
//! serde_yaml does not expose node positions, but it stamps every error
//! with the position of the node being deserialized when the error arose.
//! So the document is walked along the path, and at the target node an
//! error carrying a marker is raised; its location is the node's.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Whether to point at the last key itself or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    Key,
    Value,
}

/// Raised at the target node; an unlikely text so no real error matches.
const FOUND: &str = "\u{0}bronze-config: node found\u{0}";

/// The 1-based line and column of the node at `path`, where `occurrence`
/// picks among repeated keys for the last segment (1 = first).
pub(crate) fn locate(src: &str, path: &[Segment], occurrence: usize, point: Point) -> Option<(usize, usize)> {
    let seek = Seek { path, occurrence, point };
    match seek.deserialize(serde_yaml::Deserializer::from_str(src)) {
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|loc| (loc.line(), loc.column())),
        _ => None,
    }
}

/// Fails on whatever node it is handed; its `expecting` text carries the
/// marker so even serde's own "invalid type" errors do.
struct Found;

impl Visitor<'_> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(FOUND)
    }
}

struct Seek<'a> {
    path: &'a [Segment],
    occurrence: usize,
    point: Point,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            return d.deserialize_any(Found);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.path.split_first() else {
            return Ok(());
        };
        let last = rest.is_empty();
        let occurrence = if last { self.occurrence } else { 1 };
        let mut seen = 0;
        loop {
            let key = KeySeed { want, seen: &mut seen, occurrence, fail_here: last && self.point == Point::Key };
            match map.next_key_seed(key)? {
                None => return Ok(()),
                Some(true) => {
                    return map.next_value_seed(Seek { path: rest, occurrence: self.occurrence, point: self.point });
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.path.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek { path: rest, occurrence: self.occurrence, point: self.point }).map(|_| ())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one mapping key and says whether it is the wanted occurrence of
/// the wanted key; with `fail_here` it raises the marker at that key.
struct KeySeed<'a> {
    want: &'a str,
    seen: &'a mut usize,
    occurrence: usize,
    fail_here: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // deserialize_str hands over a scalar key's text as written.
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v != self.want {
            return Ok(false);
        }
        *self.seen += 1;
        if *self.seen != self.occurrence {
            return Ok(false);
        }
        if self.fail_here {
            return Err(E::custom(FOUND));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    const DOC: &str = "version: v1alpha1
machine:
  hostname: a
  env:
    A: 1
    B: 2
    A: 3
  list:
    - x
    - {name: y, port: 80}
";

    #[test]
    fn finds_keys_values_and_items() {
        assert_eq!(locate(DOC, &[key("version")], 1, Point::Key), Some((1, 1)));
        assert_eq!(locate(DOC, &[key("version")], 1, Point::Value), Some((1, 10)));
        let hostname = [key("machine"), key("hostname")];
        assert_eq!(locate(DOC, &hostname, 1, Point::Value), Some((3, 13)));
        let dup = [key("machine"), key("env"), key("A")];
        assert_eq!(locate(DOC, &dup, 2, Point::Key), Some((7, 5)));
        let port = [key("machine"), key("list"), Segment::Index(1), key("port")];
        assert_eq!(locate(DOC, &port, 1, Point::Value), Some((10, 23)));
        assert_eq!(locate(DOC, &[], 1, Point::Value), Some((1, 1)));
    }

    #[test]
    fn misses_are_none() {
        assert_eq!(locate(DOC, &[key("nope")], 1, Point::Key), None);
        let dup = [key("machine"), key("env"), key("B")];
        assert_eq!(locate(DOC, &dup, 2, Point::Key), None);
        let past = [key("machine"), key("list"), Segment::Index(5)];
        assert_eq!(locate(DOC, &past, 1, Point::Value), None);
        assert_eq!(locate("a: [", &[key("a")], 1, Point::Key), Some((1, 1)));
    }
}
