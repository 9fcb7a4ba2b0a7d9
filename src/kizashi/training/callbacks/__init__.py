"""Training concerns as Lightning callbacks, one small class per module.

    EMACallback         (ema) EMA teacher weights, updated after every optimizer step;
                        validation, test and prediction run on them (swapped in and out);
                        saved in checkpoints, so a resumed run continues the same average
    GradientFlowAudit   (gradient_audit) on the first optimizer step: every trainable
                        parameter has a finite, non-zero gradient and is in the optimizer
                        exactly once, else a GradientFlowError naming the parameters
    NonFiniteGuard      (non_finite) a step with a NaN/Inf loss or gradient is skipped (no
                        update) and counted; training stops with NonFiniteTrainingError
                        after ``limit``
    SignalCheckpoint    (signal_checkpoint) SIGINT/SIGTERM -> save ``last.ckpt`` at the next
                        batch boundary and stop cleanly; also keeps ``last.ckpt`` current at
                        every epoch end
    OOMRecovery         (oom) CUDA out of memory in a training step -> free memory, run the
                        day batch as 2, 4, ... micro-batches (gradients accumulated) and retry
    GradualUnfreezing   (gradual_unfreezing) a pretrained LM encoder frozen for N epochs,
                        then unfrozen at once or block by block (Lightning's BaseFinetuning)
    LMRecorder          (lm_recorder) one metrics row per validation of LM training
    EpochRecorder       (epoch_recorder) one metrics row per epoch of Stage-1 pretraining

``helpers`` holds what the recorders share (:class:`FiniteMean`, :func:`step_loss`).
The first five work with any :class:`~kizashi.training.module.ForecastModule`;
``OOMRecovery`` needs its cooperation (the module asks it to run the step), the others only
use Lightning's hooks.
"""

from kizashi.training.callbacks.ema import EMACallback
from kizashi.training.callbacks.epoch_recorder import EpochRecorder
from kizashi.training.callbacks.gradient_audit import GradientFlowAudit, GradientFlowError, gradient_problems
from kizashi.training.callbacks.gradual_unfreezing import GradualUnfreezing
from kizashi.training.callbacks.helpers import FiniteMean, step_loss
from kizashi.training.callbacks.lm_recorder import LMRecorder
from kizashi.training.callbacks.non_finite import NonFiniteGuard, NonFiniteTrainingError
from kizashi.training.callbacks.oom import OOMRecovery
from kizashi.training.callbacks.signal_checkpoint import LAST_CHECKPOINT, SignalCheckpoint

__all__ = [
    "LAST_CHECKPOINT",
    "EMACallback",
    "EpochRecorder",
    "FiniteMean",
    "GradientFlowAudit",
    "GradientFlowError",
    "GradualUnfreezing",
    "LMRecorder",
    "NonFiniteGuard",
    "NonFiniteTrainingError",
    "OOMRecovery",
    "SignalCheckpoint",
    "gradient_problems",
    "step_loss",
]
