"""metrics.json (from `evaluation.evaluate`) -> the markdown table beside the listening page."""

# MusicLM on MusicCaps (Agostinelli et al., 2023, Table 1), for scale only: their embedders
# (TRILL, VGGish), classifier (LEAF) and MuLan are not ours, so only fad_vggish is directly
# comparable, and only with the released VGGish weights on MusicCaps.
PAPER = "MusicLM (paper, MusicCaps): FAD_TRILL 0.44, FAD_VGG 4.0, KLD 1.01, MCC 0.51"


def _fmt(value) -> str:
  return "—" if value is None else f"{value:.4g}"


def markdown(report: dict) -> str:
  ref = report["reference"]
  rows = []
  for name, values in report["fad"].items():
    rows.append((f"FAD ({name})", values["fad"],
                 f"{values['generated_windows']} vs {values['reference_windows']} windows, "
                 f"{values['dim']}-d; lower is better"))
    if "fad_inf" in values:
      rows.append((f"FAD∞ ({name})", values["fad_inf"]["fad_inf"],
                   f"extrapolated over generated subsets of {values['fad_inf']['sizes']}"))
    elif "fad_inf_skipped" in values:
      rows.append((f"FAD∞ ({name})", None, values["fad_inf_skipped"]))
  kld = report["kl"]
  for convention in ("softmax", "sigmoid"):
    rows.append((f"KLD ({convention}, musicnn tags)", kld[convention]["kld"],
                 f"KL(ref ‖ gen), paired by {kld['pairing']}"
                 + (f" ({kld['unpaired']} generations without their reference)"
                    if kld.get("unpaired") else "")
                 + f"; both directions {_fmt(kld[convention]['kld_both'])}"))
  if report.get("mcc"):
    biased = report["mcc"].get("selection_biased")
    rows.append(("MCC (MuLan)", report["mcc"]["mcc"], "text–audio cosine; higher is better"
                 + ("; **selection-biased**: the clips were picked as best of N by this same "
                    "MuLan" if biased else "")))
    rows.append(("MCC of the references", report["mcc"]["mcc_reference"],
                 "the same on the reference clips and captions"))
  if report.get("codec"):
    codec = report["codec"]
    rows.append(("SoundStream SI-SNR (dB)", codec["si_snr_db"],
                 f"reconstruction of {codec['num_clips']} reference clips; higher is better"))
    rows.append(("SoundStream mel distance", codec["mel_distance"], "lower is better"))
  lines = [f"# Metrics: {report['num_generations']} generations vs {ref['name']} "
           f"({ref['split']}, {ref['num_clips']} clips)", "",
           "| metric | value | notes |", "| --- | --- | --- |"]
  lines += [f"| {name} | {_fmt(value)} | {note} |" for name, value, note in rows]
  selection = report.get("selection")
  if selection:
    lines += ["", f"{selection['reranked_clips']} generations are the best of "
              f"{selection['num_candidates']} candidates by {', '.join(selection['scorer'])} "
              f"({', '.join(selection['scorer_dirs'])})."]
  lines += ["", PAPER + " (different embedders: only FAD_VGG is comparable).", ""]
  missing = ref.get("referenced_ids_missing") or []
  lines.append(f"Reference ids present ({ref['num_clips']}): "
               + ", ".join(ref["ids_present"][:50])
               + (" …" if ref["num_clips"] > 50 else ""))
  if missing:
    lines.append(f"Referenced by generations but absent: {', '.join(missing)}")
  return "\n".join(lines) + "\n"
