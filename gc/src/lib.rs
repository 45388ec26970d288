//! cairn-gc: deciding what to drop, reclaiming its space, and saying where
//! the space goes.
//!
//! - [`retention`] turns a policy (`--keep-daily 7 --keep-weekly 4 ...`) and
//!   the list of datasets into a decision per dataset, with the rules that
//!   kept it. It is pure: the store does the forgetting (`Store::forget`),
//!   in one commit.
//! - [`job`] is the delete job: passes of the cascade over the zero queue,
//!   then compaction of containers past a dead-share threshold. The store
//!   performs each step under its commit protocol; the job chooses, orders,
//!   reports and stops cleanly on request.
//! - [`plan`] simulates cascades without changing anything (`gc --dry-run`,
//!   and what forgetting one dataset would free).
//! - [`dedupe`] and [`assess`]: `cairn dedupe stats` and `dedupe assess`.

pub mod assess;
pub mod dedupe;
pub mod job;
pub mod plan;
pub mod retention;

pub use assess::{Assessment, assess};
pub use dedupe::{DedupeStats, dedupe_stats};
pub use job::{GcOptions, GcReport, Phase, collect};
pub use plan::{Cascade, dry_run};
pub use retention::{Decision, GroupBy, Policy};
