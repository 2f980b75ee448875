//! Rules for `machine.services`: unique names, dependencies that exist and
//! form no cycle, and health checks with exactly one probe.

use std::collections::{HashMap, HashSet};

use crate::schema::{Health, Machine, Resources, Service};
use crate::validate::Validation;

pub(super) fn check(machine: &Machine, out: &mut Validation) {
    let services = &machine.services;
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, service) in services.iter().enumerate() {
        let name = service.name.as_str();
        if Service::MILESTONES.contains(&name) {
            out.error(format!("machine.services[{i}].name"), format!("{name:?} is reserved for a milestone"));
        }
        if index.insert(name, i).is_some() {
            out.error(format!("machine.services[{i}].name"), format!("service {name:?} is defined more than once"));
        }
    }
    // Duplicates keep their first definition for the dependency checks.
    for (i, service) in services.iter().enumerate().rev() {
        index.insert(service.name.as_str(), i);
    }
    let plugin_ids: HashSet<&str> = machine.plugins.instances.iter().map(|p| p.id.as_str()).collect();
    for (i, service) in services.iter().enumerate() {
        check_dependencies(i, service, &index, out);
        if let Some(memory) = service.resources.memory
            && memory.as_u64() < Resources::MIN_MEMORY
        {
            out.error(
                format!("machine.services[{i}].resources.memory"),
                format!("{memory} is too small; expected at least 4MiB"),
            );
        }
        if let Some(health) = &service.health {
            check_health(&format!("machine.services[{i}].health"), health, &plugin_ids, out);
        }
    }
    check_cycles(services, &index, out);
}

fn check_dependencies(i: usize, service: &Service, index: &HashMap<&str, usize>, out: &mut Validation) {
    for (k, dep) in service.depends_on.iter().enumerate() {
        let dep = dep.as_str();
        let at = format!("machine.services[{i}].dependsOn[{k}]");
        if dep == service.name.as_str() {
            out.error(at, format!("service {dep:?} cannot depend on itself"));
        } else if !index.contains_key(dep) && !Service::MILESTONES.contains(&dep) {
            out.error(at, format!("unknown service {dep:?}; expected a service name, time-synced or network-ready"));
        }
    }
}

fn check_health(at: &str, health: &Health, plugin_ids: &HashSet<&str>, out: &mut Validation) {
    let probes = [health.tcp.is_some(), health.http.is_some(), health.plugin.is_some()];
    let set = probes.iter().filter(|&&p| p).count();
    if set != 1 {
        out.error(at, format!("exactly one of tcp, http or plugin must be set, found {set}"));
    }
    if let Some(url) = &health.http
        && !matches!(url.scheme(), "http" | "https")
    {
        out.error(format!("{at}.http"), format!("scheme {:?} is not allowed; expected http or https", url.scheme()));
    }
    if let Some(plugin) = &health.plugin
        && !plugin_ids.contains(plugin.as_str())
    {
        out.warn(format!("{at}.plugin"), format!("no plugin instance {:?} is configured", plugin.as_str()));
    }
    if health.interval.is_zero() {
        out.error(format!("{at}.interval"), "must be greater than zero");
    }
    if health.timeout.is_zero() {
        out.error(format!("{at}.timeout"), "must be greater than zero");
    }
}

/// Depth-first search with an explicit stack (a long dependency chain must
/// not overflow the thread's stack). Each back edge is one cycle, reported
/// at the `dependsOn` entry that closes it.
fn check_cycles(services: &[Service], index: &HashMap<&str, usize>, out: &mut Validation) {
    const NEW: u8 = 0;
    const ON_STACK: u8 = 1;
    const DONE: u8 = 2;
    // edges[i]: (position in dependsOn, service index), self-edges excluded
    // because they are reported on their own.
    let edges: Vec<Vec<(usize, usize)>> = services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.depends_on
                .iter()
                .enumerate()
                .filter_map(|(k, dep)| index.get(dep.as_str()).map(|&t| (k, t)))
                .filter(|&(_, t)| t != i)
                .collect()
        })
        .collect();
    let name = |i: usize| services[i].name.as_str();
    let mut state = vec![NEW; services.len()];
    for start in 0..services.len() {
        if state[start] != NEW {
            continue;
        }
        state[start] = ON_STACK;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(&(node, next)) = stack.last() {
            let Some(&(k, target)) = edges[node].get(next) else {
                state[node] = DONE;
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match state[target] {
                NEW => {
                    state[target] = ON_STACK;
                    stack.push((target, 0));
                }
                ON_STACK => {
                    let from = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let cycle: Vec<&str> = stack[from..].iter().map(|&(n, _)| name(n)).chain([name(target)]).collect();
                    out.error(
                        format!("machine.services[{node}].dependsOn[{k}]"),
                        format!("dependency cycle: {}", cycle.join(" -> ")),
                    );
                }
                _ => {}
            }
        }
    }
}
