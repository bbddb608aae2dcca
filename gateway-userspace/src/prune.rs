//! `gateway prune-pins`: the pin sets in the bpffs, each with why it is
//! kept or removed and the kernel memory its maps hold; the orphaned ones
//! removed.
use std::process::ExitCode;

use gateway_userspace::dataplane::{orphans, pins};

use crate::cli::PruneArgs;

/// One line per pin set, then a summary; fails if a removal failed.
pub(crate) fn prune_pins(args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let pruned = orphans::prune(args.dry_run)?;
    let sets = pruned.len();
    let (mut orphaned, mut freed, mut failed) = (0, 0, 0);
    for pruned in pruned {
        let surveyed = &pruned.surveyed;
        let memlock = surveyed
            .memlock
            .map_or("memlock unknown".to_string(), |bytes| {
                format!("memlock {bytes} ({})", pins::human_bytes(bytes))
            });
        let what = match &pruned.removed {
            None if surveyed.verdict.is_orphaned() => "would remove",
            None => "kept",
            Some(Ok(())) => "removed",
            Some(Err(_)) => "NOT removed",
        };
        println!(
            "{} namespace {} interface {} {memlock}: {what}: {}",
            surveyed.set.path().display(),
            surveyed.set.netns,
            surveyed.set.interface,
            surveyed.verdict
        );
        if surveyed.verdict.is_orphaned() {
            orphaned += 1;
        }
        match pruned.removed {
            Some(Err(err)) => {
                eprintln!("error: {:#}", anyhow::Error::from(err));
                failed += 1;
            }
            _ if surveyed.verdict.is_orphaned() => freed += surveyed.memlock.unwrap_or(0),
            _ => {}
        }
    }
    println!(
        "{sets} pin set(s), {orphaned} orphaned: {} of locked kernel memory {}",
        pins::human_bytes(freed),
        if args.dry_run {
            "would be freed (dry run)"
        } else {
            "freed"
        }
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
