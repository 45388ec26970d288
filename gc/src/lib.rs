//! cairn-gc: deciding what to drop and (with the delete job, still to
//! come) reclaiming it.
//!
//! [`retention`] turns a policy (`--keep-daily 7 --keep-weekly 4 ...`) and
//! the list of datasets into a decision per dataset, with the rules that
//! kept it. It is pure: the store does the forgetting
//! (`Store::forget`), in one commit.

pub mod retention;

pub use retention::{Decision, GroupBy, Policy};
