//! cairn-gc: deciding what to drop, and reclaiming its space.
//!
//! - [`retention`] turns a policy (`--keep-daily 7 --keep-weekly 4 ...`) and
//!   the list of datasets into a decision per dataset, with the rules that
//!   kept it. It is pure: the store does the forgetting (`Store::forget`),
//!   in one commit.
//! - [`job`] is the delete job: passes of the cascade over the zero queue,
//!   then compaction of containers past a dead-share threshold. The store
//!   performs each step under its commit protocol; the job chooses, orders,
//!   reports and stops cleanly on request.
//! - [`plan`] answers `gc --dry-run` without changing anything.

pub mod job;
pub mod plan;
pub mod retention;

pub use job::{GcOptions, GcReport, Phase, collect};
pub use plan::dry_run;
pub use retention::{Decision, GroupBy, Policy};
