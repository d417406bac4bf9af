//! The font plotters draws text with: plotters has none of its own, so a
//! picture's text needs a system font (Debian: fonts-dejavu-core).

use std::path::Path;

use anyhow::Context;
use plotters::style::FontStyle;

const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the first font found as plotters' "sans-serif" (once per process).
pub fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = FONT_FILES
                .iter()
                .find(|p| Path::new(p).exists())
                .with_context(|| {
                    format!(
                        "no font for a picture's text: install fonts-dejavu-core (looked for {})",
                        FONT_FILES.join(", ")
                    )
                })
                .map_err(|e| format!("{e:#}"))?;
            let bytes: &'static [u8] = Box::leak(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?
                    .into_boxed_slice(),
            );
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}
