//! `fgclip convert-backbone`: turns a CLIP or SigLIP 2 NaFlex model into an FG-CLIP / FG-CLIP 2 checkpoint the
//! way the official trainers initialise stage 2 (`--from_openai` / `--from_siglip2`): long text positions
//! stretched, the long / box heads and the dense head copied, the stage-2 logit scales set. The result is an
//! official-layout folder that `fgclip train` (`model.init`), every other command and the official code load.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backbone: a local folder or a Hugging Face id (`openai/clip-vit-base-patch16`,
    /// `google/siglip2-base-patch16-naflex`, …).
    pub backbone: String,
    /// Output folder for the FG-CLIP / FG-CLIP 2 checkpoint.
    pub out: PathBuf,
    /// Replace the output folder's model files if they exist.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.out.join(fgclip::hub::WEIGHTS_FILE).exists() && !a.overwrite {
        bail!("{} already holds a model (use --overwrite to replace it)", a.out.display());
    }
    let src = fgclip::hub::resolve(&a.backbone).with_context(|| format!("backbone {}", a.backbone))?.root;
    let family =
        fgclip_train::init::convert_backbone(&src, &a.out).with_context(|| format!("converting {}", src.display()))?;
    println!("{} written to {} (from {})", family.name(), a.out.display(), a.backbone);
    Ok(())
}
