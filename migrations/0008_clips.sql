-- Clips: the time of the sampled video frame each object was seen in (seconds from the video's
-- first frame), so that a video's thumbnail is drawn on that frame and the event page can mark
-- the sampled frames on the video's timeline. NULL for images and for objects detected before.
ALTER TABLE detections ADD COLUMN frame_seconds double precision;
