//! The one place a `config.json` picks its family: the family modules implement [`Towers`], this module knows
//! them all (so neither knows the other).

use crate::checkpoint::Weights;
use crate::config::ModelConfig;
use crate::family::Towers;
use crate::plan::ExecutionPlan;
use crate::Result;

/// Builds the towers of `config` on `weights` the way `plan` says.
pub fn load_towers(config: &ModelConfig, weights: &Weights, plan: &ExecutionPlan) -> Result<Box<dyn Towers>> {
    Ok(match config {
        ModelConfig::FgClip(c) => Box::new(crate::fgclip1::FgClip::load(weights, c, plan)?),
        ModelConfig::FgClip2(c) => Box::new(crate::fgclip2::FgClip2::load(weights, c, plan)?),
    })
}
