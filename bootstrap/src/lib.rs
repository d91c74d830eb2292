//! `kraftops-bootstrap`: a cluster's AWS network and machines, made from its
//! desired-state repository — the seed platform's Terraform, as data.
//!
//! The flow is the same as the agent's, one level down:
//!
//! ```text
//! repository ──load_dir──► Model ──desired──► Desired ─┐
//!                                                      ├─diff──► Plan ──ec2::apply──► AWS
//!            EC2 (tagged kraftops:cluster) ──read──► Actual ─┘
//! ```
//!
//! - [`desired`]: what the cluster needs on AWS (pure): VPC, subnets, the
//!   security group's rules derived from the roles' ports, one machine per
//!   node.
//! - [`actual`]: what exists, as read back by tag. There is no state file:
//!   the tags `kraftops:cluster` and `kraftops:resource` are the state.
//! - [`diff`]: desired against actual (pure): what to create, keep, change
//!   and delete, in the order it can be done, or why it cannot.
//! - [`ec2`]: the only module that talks to AWS: reading, resolving the
//!   image, and carrying out a plan.
//! - [`cli`]: `plan`, `apply`, `destroy`.
//!
//! This is the only crate of the workspace that links the AWS SDK (a test
//! checks the crate graph).

pub mod actual;
pub mod cli;
pub mod desired;
pub mod diff;
pub mod ec2;
pub mod tags;
