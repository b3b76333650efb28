"""NanoDet-g 416 input preparation and output decoding, in numpy (no onnxruntime here).

Input: letterbox to 416×416 (scale = min(416/w, 416/h), picture at the top-left, right/bottom
padded with 0), BGR, per-channel normalization, NCHW float32.
Output: per stride (8, 16, 32) a class-score map [1, N, 80] (sigmoid applied) and a box map
[1, N, 44]: 4 sides (left, top, right, bottom) × 11 distribution bins; a side's distance is
softmax(bins) · [0..10] · stride from the cell centre. Per-class NMS at IoU 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from streams.detectors.base import BoundingBox, DetectedObject
from streams.detectors.coco import COCO_LABELS

INPUT_SIZE = 416
STRIDES: tuple[int, ...] = (8, 16, 32)
BINS = 11
NMS_IOU = 0.5
MAX_CANDIDATES = 1000  # best-scoring cells kept before NMS, bounds the work at low thresholds

_MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
_STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
_PROJECT = np.arange(BINS, dtype=np.float32)

FloatArray = NDArray[np.float32]


def letterbox(image: Image.Image, size: int = INPUT_SIZE) -> tuple[FloatArray, float]:
    """The model input for an RGB picture, and the scale from picture to input pixels."""
    width, height = image.size
    scale = min(size / width, size / height)
    new_width = max(1, min(size, round(width * scale)))
    new_height = max(1, min(size, round(height * scale)))
    resized = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    canvas[:new_height, :new_width] = np.asarray(resized, dtype=np.float32)
    bgr = canvas[:, :, ::-1]
    normalized = (bgr - _MEAN_BGR) / _STD_BGR
    tensor = np.ascontiguousarray(normalized.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
    return tensor, scale


def decode_outputs(
    outputs: Sequence[NDArray[np.float32]],
    *,
    scale: float,
    width: int,
    height: int,
    threshold: float,
    iou_threshold: float = NMS_IOU,
    labels: Sequence[str] = COCO_LABELS,
) -> list[DetectedObject]:
    """Objects from the six raw outputs, in picture pixels, best confidence first."""
    scores_by_cells: dict[int, FloatArray] = {}
    boxes_by_cells: dict[int, FloatArray] = {}
    for output in outputs:
        array = np.asarray(output, dtype=np.float32).reshape(-1, output.shape[-1])
        if array.shape[1] == len(labels):
            scores_by_cells[array.shape[0]] = array
        elif array.shape[1] == 4 * BINS:
            boxes_by_cells[array.shape[0]] = array
        else:
            raise ValueError(f"unexpected NanoDet output shape {output.shape}")
    all_boxes: list[FloatArray] = []
    all_scores: list[FloatArray] = []
    all_classes: list[NDArray[np.intp]] = []
    for stride in STRIDES:
        cells_per_side = INPUT_SIZE // stride
        cells = cells_per_side * cells_per_side
        if cells not in scores_by_cells or cells not in boxes_by_cells:
            raise ValueError(f"NanoDet outputs lack the maps for stride {stride} ({cells} cells)")
        scores = scores_by_cells[cells]
        classes = scores.argmax(axis=1)
        best = scores[np.arange(cells), classes]
        keep = np.flatnonzero(best >= threshold)
        if keep.size == 0:
            continue
        rows, cols = np.divmod(keep, cells_per_side)
        centre_x = (cols.astype(np.float32) + 0.5) * stride
        centre_y = (rows.astype(np.float32) + 0.5) * stride
        distances = side_distances(boxes_by_cells[cells][keep]) * stride
        boxes = np.stack(
            [
                centre_x - distances[:, 0],
                centre_y - distances[:, 1],
                centre_x + distances[:, 2],
                centre_y + distances[:, 3],
            ],
            axis=1,
        )
        all_boxes.append(boxes)
        all_scores.append(best[keep])
        all_classes.append(classes[keep])
    if not all_boxes:
        return []
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    classes = np.concatenate(all_classes)
    if scores.size > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    kept = batched_nms(boxes, scores, classes, iou_threshold)
    frame = boxes[kept] / scale
    frame[:, [0, 2]] = frame[:, [0, 2]].clip(0, width)
    frame[:, [1, 3]] = frame[:, [1, 3]].clip(0, height)
    return [
        DetectedObject(
            label=labels[int(cls)],
            confidence=float(score),
            bbox=BoundingBox(x=float(x1), y=float(y1), width=float(x2 - x1), height=float(y2 - y1)),
        )
        for (x1, y1, x2, y2), score, cls in zip(frame, scores[kept], classes[kept], strict=True)
    ]


def side_distances(raw: FloatArray) -> FloatArray:
    """Expected distance in cells for each of the 4 sides: softmax over 11 bins · [0..10]."""
    bins = raw.reshape(-1, 4, BINS)
    shifted = np.exp(bins - bins.max(axis=2, keepdims=True))
    probabilities = shifted / shifted.sum(axis=2, keepdims=True)
    distances: FloatArray = (probabilities * _PROJECT).sum(axis=2, dtype=np.float32)
    return distances


def box_iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one (x1, y1, x2, y2) box with each of `boxes`."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    intersection = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    iou: FloatArray = np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0).astype(
        np.float32
    )
    return iou


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> NDArray[np.intp]:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        current = int(order[0])
        kept.append(current)
        rest = order[1:]
        order = rest[box_iou(boxes[current], boxes[rest]) <= iou_threshold]
    return np.array(kept, dtype=np.intp)


def batched_nms(
    boxes: FloatArray,
    scores: FloatArray,
    classes: NDArray[np.intp],
    iou_threshold: float,
) -> NDArray[np.intp]:
    """NMS within each class only: boxes of different classes never suppress each other."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.intp)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (classes.astype(np.float32) * span)[:, np.newaxis]
    return nms(shifted, scores, iou_threshold)
