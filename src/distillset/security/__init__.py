"""Security of distilled sets: signatures (who made a set, and that it is unchanged), a backdoor scan from the
set alone, and the Dark Distillation attack they are audited against (docs/security.md)."""

from distillset.security.dark_distillation import (
    AttackResult,
    DarkDistillationConfig,
    attack_success_rate,
    dark_distillation,
    gradient_distance,
)
from distillset.security.scan import (
    CALIBRATED_THRESHOLDS,
    ScanResult,
    calibrated_threshold,
    high_frequency_ratio,
    scan_set,
)
from distillset.security.signing import (
    SignatureError,
    VerifiedSignature,
    generate_keypair,
    load_trusted_run,
    sign_run,
    verify_run,
)
from distillset.security.triggers import Trigger, TriggerSpec

__all__ = [
    "CALIBRATED_THRESHOLDS",
    "AttackResult",
    "DarkDistillationConfig",
    "ScanResult",
    "SignatureError",
    "Trigger",
    "TriggerSpec",
    "VerifiedSignature",
    "attack_success_rate",
    "calibrated_threshold",
    "dark_distillation",
    "generate_keypair",
    "gradient_distance",
    "high_frequency_ratio",
    "load_trusted_run",
    "scan_set",
    "sign_run",
    "verify_run",
]
