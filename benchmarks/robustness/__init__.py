"""python -m benchmarks.robustness [--quick] [--out reports] [--bundle DIR]: the robustness lab.

Regenerates reports/robustness.md and reports/figures/*.png from a model bundle (default: the shipped
one), screening everything through the real runtime (edgeguard.Guard, onnxruntime, K samples):

- attacks on the bundle's own classifier weights (train.from_onnx): FGSM, L-BFGS, PGD-Linf, C&W-L2;
- Experiment A: consistency under sampling and detection, per attack;
- out-of-distribution detection (Fashion-MNIST, noise, inverted digits, rendered letters/symbols);
- the verdict kinds (adversarial, out-of-distribution, uncertain) of each set's flagged images;
- Experiment B: confidence vs reconstruction loss, calibration (ECE, temperature), risk-coverage;
- the held-out signal selection recorded in the manifest (``calibration.selection``, from
  ``python -m export.calibrate --select``), rendered as recorded, never recomputed on test data;
- an adaptive (detector-aware, EOT) attack;
- other writers and real inputs: USPS digits through ``edgeguard.preprocess`` and ``Guard.screen`` (vs the MNIST
  test images), letters and symbols, whether flagged images get the right verdict kind, and ``edgeguard
  calibrate`` fitted on one half of USPS and measured on the other.

The MNIST test images, the OOD sets and USPS only measure: nothing here fits, tunes or chooses on them, except the
one fit ``edgeguard calibrate`` exists for (one half of USPS, measured on the other half).

Without --quick, on the shipped bundle, it also writes the headline numbers into the manifest
(manifest["robustness"]). --quick runs a few hundred images, for the tests.

Modules: ``measure`` (the experiments), ``metrics`` (AUROC, ECE and the like), ``report`` (the markdown,
its figures and the manifest's headline numbers), ``real_world`` (the "Other writers and real inputs" section:
its measurements, markdown, targets and headline numbers), ``markdown`` (table helpers), ``run`` (the command
line: the stages in order).
"""

from benchmarks.robustness.run import main

__all__ = ["main"]
