//! One module per plugin world, behind one trait. A world module owns its
//! generated bindings, how a call is made (input → guest export), the size
//! of what the guest returned, the host's check of it (bounds, escaping,
//! validation) and its JSON for operators. Controllers call a world with
//! [`crate::plugins::call::call`]`::<W>(...)` or
//! [`crate::plugins::instance::Instance::call`]`::<W>(...)`.
//!
//! Adding a world: a module here, a variant of [`Prepared`] and its arms
//! below, the world in `wit/plugin.wit` and in `bronze_bundle::World`.

pub mod health;
pub mod metadata;
pub mod network;

use super::context::PluginState;
use futures::future::BoxFuture;
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// A plugin world as the host calls it.
pub trait World: Sized + Send + Sync + 'static {
    /// The manifest's `world`.
    const WORLD: bronze_bundle::World;
    /// The component linked for this world, ready to instantiate.
    type Pre: Send + Sync + 'static;
    /// What one call takes.
    type Input: Send + 'static;
    /// What the guest returned, as generated types.
    type Raw: Send + 'static;
    /// What the host keeps: bounded, escaped, validated.
    type Output: Send + Sync + 'static;

    /// Checks that the component implements the world.
    fn link(pre: InstancePre<PluginState>) -> wasmtime::Result<Prepared>;
    /// This world's pre-instance, if `prepared` is of this world.
    fn pre(prepared: &Prepared) -> Option<&Self::Pre>;
    /// Instantiates and calls the guest in `store`.
    fn invoke<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<PluginState>,
        input: Self::Input,
    ) -> BoxFuture<'a, Result<Self::Raw, Step>>;
    /// Bytes of strings and lists in a result; over
    /// [`MAX_RESULT_BYTES`] it is refused before any other work.
    fn raw_size(raw: &Self::Raw) -> usize;
    /// The host's check. `Err` is a limit the result broke (the call then
    /// counts as failed); a result the world itself calls bad (a metadata
    /// answer that does not validate) is part of `Output`.
    fn check(raw: Self::Raw) -> Result<Self::Output, String>;
    /// For `plugins run` and status.
    fn to_json(output: &Self::Output) -> serde_json::Value;
}

/// A result larger than this (strings and lists, in bytes) is refused.
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// A component linked against one instance's grants, of one world.
pub enum Prepared {
    Health(<health::Health as World>::Pre),
    Metadata(<metadata::Metadata as World>::Pre),
    Network(<network::Network as World>::Pre),
}

impl Prepared {
    pub fn world(&self) -> bronze_bundle::World {
        match self {
            Prepared::Health(_) => health::Health::WORLD,
            Prepared::Metadata(_) => metadata::Metadata::WORLD,
            Prepared::Network(_) => network::Network::WORLD,
        }
    }
}

/// Links `pre` as `world`.
pub fn link(world: bronze_bundle::World, pre: InstancePre<PluginState>) -> wasmtime::Result<Prepared> {
    match world {
        bronze_bundle::World::HealthCheck => health::Health::link(pre),
        bronze_bundle::World::MetadataProvider => metadata::Metadata::link(pre),
        bronze_bundle::World::NetworkConfigurator => network::Network::link(pre),
    }
}

/// Which step of a call failed.
pub enum Step {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// Sizes shared by the worlds' `raw_size`.
pub(crate) fn pairs_size(pairs: &[(String, String)]) -> usize {
    pairs.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
}

pub(crate) fn strings_size(list: &[String]) -> usize {
    list.iter().map(|s| s.len() + 8).sum()
}

/// `text` escaped, reusing it when nothing needed escaping.
pub(crate) fn escaped(text: String) -> String {
    match bronze_bundle::text::escape(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

pub(crate) fn escaped_all(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(escaped).collect()
}
