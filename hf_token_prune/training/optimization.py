"""The optimiser details of the paper's recipes: layer-wise learning-rate decay (BEiT, AudioMAE) and AST's step
decay of the learning rate."""

import re


def layer_id(parameter_name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 for embeddings, i + 1 for encoder layer i, the rest on top."""
    match = re.search(r"\.layers?\.(\d+)\.", parameter_name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings." in parameter_name or parameter_name.split(".")[-1] in ("cls_token", "pos_embed"):
        return 0
    return num_layers + 1


def layer_decay_parameter_groups(model, learning_rate: float, weight_decay: float, layer_decay: float, decay_names):
    """Parameter groups with learning rate `learning_rate * layer_decay ** (num_layers + 1 - depth)` (BEiT, AudioMAE):
    the head trains at the full rate, each layer below at `layer_decay` times the one above. Only parameters named in
    `decay_names` get weight decay."""
    num_layers = model.config.num_hidden_layers
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decay = layer_id(name, num_layers), name in decay_names
        group = groups.setdefault(
            (depth, decay),
            {
                "params": [],
                "lr": learning_rate * layer_decay ** (num_layers + 1 - depth),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def step_decay_lambda(steps_per_epoch: int, start_epoch: int, every_epochs: int, factor: float, warmup_steps: int = 0):
    """AST's learning-rate schedule per optimizer step: multiplied by `factor` at epoch `start_epoch` and every
    `every_epochs` epochs after (torch's MultiStepLR stepped per epoch in the original code), after a linear warm-up
    over the first `warmup_steps` steps (AST's AudioSet recipe warms up over 1000)."""

    def multiplier(step: int) -> float:
        epoch = step // steps_per_epoch
        decay = 1.0 if epoch < start_epoch else factor ** ((epoch - start_epoch) // every_epochs + 1)
        return decay * min(1.0, step / warmup_steps) if warmup_steps else decay

    return multiplier
