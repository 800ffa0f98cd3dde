"""Run under one Keras backend (``KERAS_BACKEND`` set by the parent test) and write results.

    python tests/backend_child.py probs OUT.npz IMAGE.png MODEL [MODEL ...]
    python tests/backend_child.py finetune OUT.json IMAGE.png LABELS.npy BASE.keras SAVE_DIR
    python tests/backend_child.py load OUT.json MODEL.keras IMAGE.png
"""

import json
import sys

import numpy as np


def main(argv: list[str]) -> None:
    import keras

    from nucleoseg.inference.postprocess import probabilities_to_labels
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.images import open_image

    mode, out = argv[0], argv[1]
    if mode == "probs":
        image = open_image(argv[2])
        arrays = {}
        for name in argv[3:]:
            seg = Segmenter.load(name, precision="float32")
            arrays["backend"] = np.array("openvino" if seg.engine == "openvino"
                                         else keras.backend.backend())
            probs = run(seg.probabilities(image)).astype(np.float32)
            arrays[f"{name}_probs"] = probs
            # what seg.segment does after the same forward pass (one pass, not two)
            arrays[f"{name}_labels"] = probabilities_to_labels(probs, seg.params)
        np.savez_compressed(out, **arrays)
    elif mode == "finetune":
        from nucleoseg.training.finetune import fine_tune

        image, labels = open_image(argv[2]), np.load(argv[3])
        losses: list[float] = []
        path = fine_tune(argv[4], [(image, labels)], "ft_" + keras.backend.backend(),
                         epochs=3, steps_per_epoch=4, batch_size=2, learning_rate=3e-3,
                         out_dir=argv[5], on_epoch=lambda e, logs: losses.append(logs["loss"]))
        with open(out, "w") as f:
            json.dump({"backend": keras.backend.backend(), "losses": losses,
                       "path": str(path)}, f)
    elif mode == "load":
        seg = Segmenter.load(argv[2], precision="float32")
        labels = run(seg.segment(open_image(argv[3])))
        with open(out, "w") as f:
            json.dump({"backend": keras.backend.backend(), "nuclei": int(labels.max())}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
