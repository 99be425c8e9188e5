//! `fgclip info`: what a checkpoint is, read from its config and weights.

use anyhow::Result;
use fgclip::config::ModelConfig;
use fgclip::TextWalk;

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor name.
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load()?;
    let params: usize = model
        .weights
        .names()
        .iter()
        .filter_map(|n| model.weights.shape_of(n).ok())
        .map(|s| s.iter().product::<usize>())
        .sum();
    let disk: u64 = model.files.weights.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let mut j = serde_json::json!({
        "model": a.model.model,
        "root": model.files.root,
        "family": model.family().name(),
        "embed_dim": model.embed_dim(),
        "parameters": params,
        "weights_bytes": disk,
        "weight_files": model.files.weights.len(),
        "storage_dtypes": model.weights.storage_dtypes(),
        "text_len": { "short": model.text_len(TextWalk::Short), "long": model.text_len(TextWalk::Long), "box": model.text_len(TextWalk::Box) },
        "text_attention_mask": model.uses_text_mask(),
        "image_mean": model.processor.mean,
        "image_std": model.processor.std,
        "logits": model.score_head().formula(),
    });
    // The execution plan: how this model computes, decided once at load.
    let mut plan: serde_json::Map<String, serde_json::Value> =
        model.plan().describe().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    for (part, how) in model.towers().describe_blocks() {
        plan.insert(part.replace(' ', "_"), how.into());
    }
    j["plan"] = serde_json::Value::Object(plan);
    // Matmul FLOPs per input (see fgclip::flops).
    use fgclip::flops;
    j["gflops_per_input"] = match &model.config {
        ModelConfig::FgClip(c) => serde_json::json!({
            "image": flops::fgclip_image(&c.vision, c.projection_dim) / 1e9,
            "text_short": flops::fgclip_text(&c.text, model.text_len(TextWalk::Short), c.projection_dim) / 1e9,
            "text_long": flops::fgclip_text(&c.text, model.text_len(TextWalk::Long), c.projection_dim) / 1e9,
        }),
        ModelConfig::FgClip2(c) => serde_json::json!({
            "image_128_patches": flops::fgclip2_image(&c.vision, 128) / 1e9,
            "image_256_patches": flops::fgclip2_image(&c.vision, 256) / 1e9,
            "image_576_patches": flops::fgclip2_image(&c.vision, 576) / 1e9,
            "image_1024_patches": flops::fgclip2_image(&c.vision, 1024) / 1e9,
            "text_short": flops::fgclip2_text(&c.text, model.text_len(TextWalk::Short)) / 1e9,
            "text_long": flops::fgclip2_text(&c.text, model.text_len(TextWalk::Long)) / 1e9,
        }),
    };
    match &model.config {
        ModelConfig::FgClip(c) => {
            j["vision"] = serde_json::json!({
                "hidden_size": c.vision.hidden_size, "layers": c.vision.num_hidden_layers, "heads": c.vision.num_attention_heads,
                "intermediate_size": c.vision.intermediate_size, "image_size": c.vision.image_size, "patch_size": c.vision.patch_size,
                "grid": c.vision.grid(), "pooling": "CLS",
            });
            j["text"] = serde_json::json!({
                "hidden_size": c.text.hidden_size, "layers": c.text.num_hidden_layers, "heads": c.text.num_attention_heads,
                "vocab_size": c.text.vocab_size, "attention": "causal", "pooling": "first eos",
            });
        }
        ModelConfig::FgClip2(c) => {
            j["vision"] = serde_json::json!({
                "hidden_size": c.vision.hidden_size, "layers": c.vision.num_hidden_layers, "heads": c.vision.num_attention_heads,
                "intermediate_size": c.vision.intermediate_size, "patch_size": c.vision.patch_size,
                "position_grid": c.vision.position_grid(), "pooling": "MAP head",
                "patch_budgets": { "dynamic_buckets": [128, 256, 576, 784, 1024], "default": "dynamic, per image" },
            });
            j["text"] = serde_json::json!({
                "hidden_size": c.text.hidden_size, "layers": c.text.num_hidden_layers, "heads": c.text.num_attention_heads,
                "vocab_size": c.text.vocab_size, "projection_size": c.text.projection_size(), "keep_len": c.text.keep_len,
                "attention": "bidirectional", "pooling": "last position",
            });
        }
    }
    if a.tensors {
        j["tensors"] = model
            .weights
            .names()
            .iter()
            .map(|n| serde_json::json!({ "name": n, "shape": model.weights.shape_of(n).unwrap_or_default() }))
            .collect();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("{} ({})", a.model.model, model.family().name());
    println!("  folder            {}", model.files.root.display());
    println!(
        "  parameters        {:.1} M   weights {:.1} MB in {} file(s), stored as {}",
        params as f64 / 1e6,
        disk as f64 / 1e6,
        model.files.weights.len(),
        model.weights.storage_dtypes().join("/")
    );
    println!("  embedding dim     {}", model.embed_dim());
    println!(
        "  text lengths      short {}  long {}  box {}",
        model.text_len(TextWalk::Short),
        model.text_len(TextWalk::Long),
        model.text_len(TextWalk::Box)
    );
    println!(
        "  text mask         {}",
        if model.uses_text_mask() { "yes (tokenizer returns attention_mask)" } else { "no" }
    );
    println!("  logits            {}", j["logits"].as_str().unwrap_or(""));
    for (k, v) in model.plan().describe() {
        println!("  {:<17} {v}", format!("plan.{k}"));
    }
    for (part, how) in model.towers().describe_blocks() {
        println!("  {:<17} {how}", format!("plan.{}", part.replace(' ', "_")));
    }
    println!("  GFLOP per input   {}", j["gflops_per_input"]);
    println!("  vision            {}", j["vision"]);
    println!("  text              {}", j["text"]);
    if a.tensors {
        for n in model.weights.names() {
            println!("  {n} {:?}", model.weights.shape_of(&n).unwrap_or_default());
        }
    }
    Ok(())
}
