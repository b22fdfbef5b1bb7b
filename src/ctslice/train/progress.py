"""How a run reports while it trains: silent by default (library use, tests), a rich progress bar per epoch from
the CLI (loss, Dice and samples/s live, one summary line per epoch)."""

from __future__ import annotations


class NullProgress:
    def message(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def update(self, done: int, loss: float, dice: float, samples_per_s: float) -> None:
        pass

    def end_epoch(self, summary: str) -> None:
        pass


class RichProgress(NullProgress):
    """A rich bar per epoch on stderr; messages and epoch summaries printed above it."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console)
        self.task = None

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.bar.start()
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"epoch {epoch}/{epochs}", total=batches, stats="")

    def update(self, done: int, loss: float, dice: float, samples_per_s: float) -> None:
        self.bar.update(self.task, completed=done,
                        stats=f"loss {loss:.4f}  dice {dice:.3f}  {samples_per_s:.1f} samples/s")

    def end_epoch(self, summary: str) -> None:
        self.bar.stop()
        self.console.print(summary, highlight=False, soft_wrap=True)
