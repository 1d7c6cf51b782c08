"""Train the expert networks DANCE draws its middle encoders from (as the official pretrain.py does).

For each expert i: save its initial weights (premodel{i}_init.pth.tar), train it on the real
training set, save the trained weights (premodel{i}_trained.pth.tar), and record it in
manifest.json (model, dataset, seed, epochs, test accuracy); the folder's model card for the Hugging Face Hub,
README.md, is rewritten from the manifest whenever it changes. Experts train --parallel at a time as one
vectorised model (default: all; 1: one after another). Finished experts are skipped (after checking
that their checkpoints load); the experts in progress save their full training state after every epoch
(premodel{i}_progress.pt, or premodels{i}-{j}-..._progress.pt for a group), so a killed run, started
again with the same --parallel, continues them bit for bit.

    python pretrain.py -d cifar10 --reproduce
"""
import math
import os
import time

from tqdm import tqdm

from arguments import build_parser, config_view, parse
from arguments.values import (dance_command, dataset_tag, expert_compile, expert_recipe, holdout_split, load_data,
                              network_of, split_off_holdout)
from condense.expert_folder import (checkpoint_path, describe_split, discard, is_finished, load_progress, new_manifest,
                                    open_manifest, progress_path, record_experts)
from models import check_network, make_network
from reports.cards import model_card
from reports.trackers import Trackers, open_trackers
from training.distributed import torchrun_session
from training.vectorised import build_networks, fit_group, group_size, groups_of
from utils import (Logger, UserError, atomic_save, atomic_write_json, atomic_write_text, git_revision, make_dir,
                   remove_stale_temps, precision_line, run_cli, seed_everything, select_device)

CARD = "README.md"  # the Hub's model card of the folder


def train_experts(group, args, network, train, test, info, device, log, compile=False, track=Trackers()):
    """Train the experts `group` at once (one: alone), continuing from their last saved epoch if any; save init
    and trained weights. Expert i is initialised under seed * 1000 + i, so any one can be retrained alone. `track`
    (--logger) gets each expert's train loss per epoch."""
    models = build_networks(network, device, group, args.seed)
    for index, model in zip(group, models):
        # the init is a function of the seed, so rewriting it on resume also repairs a damaged copy
        atomic_save(model.state_dict(), checkpoint_path(args.pretrain_dir, index, "init"))
    recipe = expert_recipe(args, compile)
    seeds = [args.seed * 1000 + i for i in group]
    origin = {"seed": seeds[0] if len(group) == 1 else seeds, "network": network, "recipe": recipe.as_dict()}
    path = progress_path(args.pretrain_dir, group)
    names = f"expert {group[0]}" if len(group) == 1 else f"experts {', '.join(map(str, group))}"
    resumed = load_progress(path, origin, models) if os.path.isfile(path) else None
    done, earlier = (resumed["epoch"], resumed["seconds"]) if resumed else (0, 0.0)
    if resumed:
        log(f"{names}: resuming after epoch {done} from {path}")
    elif os.path.isfile(path):
        log(f"{names}: {path} is unreadable or from other settings; training from epoch 0")
    start = time.time()
    with tqdm(total=recipe.epochs, initial=done, desc=names, leave=False) as bar:
        def progress(epoch, losses, accs):
            bar.update()
            bar.set_postfix(loss=" ".join(f"{x:.3f}" for x in losses))
            track.scalars({f"expert{index}/train_loss": loss for index, loss in zip(group, losses)}, epoch, "epoch")
            for index, loss in zip(group, losses):
                if not math.isfinite(loss):  # never save a diverged expert (DANCE would read NaN weights)
                    raise UserError(f"expert {index}: the training loss became {loss} at epoch {epoch} (lr "
                                    f"{recipe.lr}, weight decay {recipe.weight_decay}); lower --lr or --weight_decay "
                                    f"and run again")

        def save_progress(state):
            atomic_save({**state, "origin": origin, "seconds": earlier + time.time() - start}, path)

        results = fit_group(models, train.images, train.labels, test, info.mean, info.std, recipe, device,
                            progress=progress, start=resumed, on_epoch=save_progress)
    seconds = earlier + time.time() - start
    records = {}
    for index, model, result in zip(group, models, results):
        atomic_save(model.state_dict(), checkpoint_path(args.pretrain_dir, index, "trained"))
        log(f"expert {index}: test acc {result['final']:.2f} after {recipe.epochs} epochs ({seconds:.0f} s"
            f"{'' if len(group) == 1 else f' for {len(group)} together'})")
        records[str(index)] = {"test_acc": result["final"], "seconds": round(seconds / len(group), 1),
                               "trained_with": group}
    return records


def write_card(args, manifest):
    """The folder's model card (README.md) from its manifest, written atomically; rank 0 calls it whenever the
    manifest changes, so the card lists exactly the experts recorded."""
    command = dance_command(args, len(manifest["experts"]), build_parser("condense").get_default("num_premodel"))
    text = model_card(args.pretrain_dir, manifest, describe_split(manifest.get("holdout")), command)
    atomic_write_text(text, os.path.join(args.pretrain_dir, CARD))


def keep_records(args, manifest, records):
    """Record finished experts in the manifest, then rewrite the model card to match it (rank 0)."""
    record_experts(args.pretrain_dir, manifest, records)
    write_card(args, manifest)


def rank_log(world, log):
    """Rank 0's log (file and terminal); other ranks print their lines, prefixed, and write nothing."""
    return log if world.main else (lambda msg: print(f"[rank {world.rank}] {msg}", flush=True))


def main(args):
    with torchrun_session(select_device(args.device)) as (world, device):
        train_all(args, world, device)


def train_all(args, world, device):
    """Every expert not yet finished; under torchrun, expert i trains on rank i mod N (its own files written
    there) and rank 0 records them all in the manifest."""
    seed_everything(args.seed)
    train, test, info = load_data(args)
    # DANCE.py with the same --val_split and --seed selects on exactly the held-out images
    train, _ = split_off_holdout(train, info, holdout_split(args))
    train, test = train.to(device), test.to(device)
    network = network_of(args, info)
    check_network(network)
    manifest = open_manifest(args.pretrain_dir, new_manifest(dataset_tag(args), network, args.seed,
                                                             args.pretrain_epochs, holdout_split(args),
                                                             expert_recipe(args).as_dict()))
    probe = make_network(network, "cpu")  # a network too large for memory fails here, before any file is written
    if world.main:
        make_dir(args.pretrain_dir, "--pretrain_dir")
        remove_stale_temps(args.pretrain_dir)
    world.barrier()  # the folder exists (and holds no stale temporary files) before any rank writes to it
    log = rank_log(world, Logger(args.pretrain_dir))
    log(f"pretrain {dataset_tag(args)} on {device}"
        f"{f' (rank {world.rank} of {world.size})' if world.size > 1 else ''}, git {git_revision()}: "
        f"{config_view('pretrain', args)}")  # the settings that apply (not -d imagenet's --nclass for a folder)
    if world.main:
        atomic_write_json(vars(args), os.path.join(args.pretrain_dir, "args.json"))
    track = open_trackers(args.logger, args.pretrain_dir, world, vars(args), keep_id=True, say=log)
    try:
        train_pending(args, world, device, network, manifest, probe, train, test, info, log, track)
    finally:
        track.close()


def train_pending(args, world, device, network, manifest, probe, train, test, info, log, track):
    """Train the experts of --pretrain_amount not yet finished, keep their records (rank 0) and report them to
    the trackers (`track`: per-epoch train loss, each expert's test accuracy)."""
    todo = []
    for index in range(args.pretrain_amount):
        if is_finished(args.pretrain_dir, index, manifest, probe):
            if world.main:
                log(f"expert {index}: already trained, skipped")
                discard(progress_path(args.pretrain_dir, [index]))
        else:
            if str(index) in manifest["experts"] and world.main:
                log(f"expert {index}: a checkpoint is missing, truncated or mismatched; training it again")
            todo.append(index)
    world.barrier()  # every rank has read the manifest before rank 0 rewrites it
    mine, trained = world.owned(todo), []
    compile, why = expert_compile(args, device, network, len(train), len(test)) if mine else (False, "")
    if mine:
        log(f"{precision_line(args.precision, device)}; compile: expert training {why}")
    for group in groups_of(mine, group_size(args.parallel, probe, device, len(mine))):
        records = train_experts(group, args, network, train, test, info, device, log, compile, track)
        if world.size == 1:
            keep_records(args, manifest, records)
            discard(progress_path(args.pretrain_dir, group))  # only once the manifest records the experts
        trained.append((group, records))
    if world.size > 1:
        everything = [part for rank_parts in world.gather(trained) for part in rank_parts]
        if world.main:
            keep_records(args, manifest, {i: r for _, records in everything for i, r in records.items()})
            for group, _ in everything:
                discard(progress_path(args.pretrain_dir, group))
    if world.main:
        if not todo:  # a folder trained before model cards existed gets one
            write_card(args, manifest)
        accs = [manifest["experts"][str(i)]["test_acc"] for i in range(args.pretrain_amount)]
        for index in todo:  # those trained now: a rerun that skips finished experts logs no point twice
            track.scalars({"experts/test_acc": accs[index]}, index, "expert")
        log(f"{len(accs)} experts in {args.pretrain_dir}: mean test acc {sum(accs) / len(accs):.2f}")


if __name__ == "__main__":
    run_cli(main, lambda: parse("pretrain"))
