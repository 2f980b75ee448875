//! Serde plumbing shared by the text-form value types: they all decode from
//! a YAML scalar through `FromStr` and encode back through `Display`.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ValueError;

/// Visits a scalar and parses it. Parsing inside `visit_str` (rather than
/// after deserializing a `String`) keeps serde_yaml's line and column on
/// the scalar itself instead of on the enclosing mapping.
struct ParseVisitor<T> {
    expecting: &'static str,
    target: PhantomData<T>,
}

impl<T: FromStr<Err = ValueError>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// Deserializes a scalar into `T` via `FromStr`.
pub(crate) fn deserialize_parsed<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = ValueError>,
{
    d.deserialize_str(ParseVisitor { expecting, target: PhantomData })
}

/// Treats an explicit `null` (e.g. a section whose entries are all
/// commented out) like an absent key.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// For `skip_serializing_if`: leaves default values out of the encoding.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Implements `Deserialize` (through `FromStr`) and `Serialize` (through
/// `Display`) for a text-form value type.
macro_rules! text_serde {
    ($ty:ty, $expecting:expr) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::types::serde_util::deserialize_parsed(d, $expecting)
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::error::ValueError;

            fn try_from(s: String) -> Result<Self, $crate::error::ValueError> {
                s.parse()
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = $crate::error::ValueError;

            fn try_from(s: &str) -> Result<Self, $crate::error::ValueError> {
                s.parse()
            }
        }
    };
}

pub(crate) use text_serde;

/// Declares a fieldless enum written as one of a few keywords, with
/// `as_str`, `FromStr`, `Display` and serde through them. Hand-rolled
/// rather than derived so a wrong value gets an `invalid <what>` message
/// (serde_yaml's derived-enum errors talk about YAML tags).
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident ($what:literal, $expecting:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $ty {
            $($(#[$vmeta])* $variant,)+
        }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::error::ValueError;

            fn from_str(s: &str) -> Result<Self, $crate::error::ValueError> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => {
                        let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        Err($crate::error::ValueError::invalid(
                            $what,
                            s,
                            format!("expected one of {}", all.join(", ")),
                        ))
                    }
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $crate::types::serde_util::text_serde!($ty, $expecting);
    };
}

pub(crate) use keyword_enum;
