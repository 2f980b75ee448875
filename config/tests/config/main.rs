//! Decoding, validation, encoding and diff tests of bronze-config against
//! whole documents.

mod bad;
mod diff;
mod fixtures;
mod good;
mod invalid;
mod props;
