-- Each camera's most recently arrived file, for its clock check (`/api/cameras`: a camera whose
-- latest upload says it was taken after it arrived has a clock running fast).
CREATE INDEX media_files_camera_observed_idx ON media_files (camera_id, observed_at DESC);
