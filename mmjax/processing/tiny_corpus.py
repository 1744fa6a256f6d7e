"""Fixed English text the tiny test tokenizer is trained on (written for mmjax).

It covers the words of the prompts mmjax builds (images, tiles, clips, answers, reasoning
tags, digits and punctuation) so that tiny-model tests tokenize to short sequences.
"""

TINY_CORPUS = """\
You are a helpful assistant. Look at the image and answer the question.
The image shows a cat sitting on a red chair next to a window. The cat is orange and white.
A woman in a space suit holds a helmet and smiles at the camera.
A cup of coffee stands on a wooden table; the cup is white and the coffee is dark brown.
Describe this image in one sentence. What color is the car? How many people are there?
There are three people in the picture: two adults and one child.
The answer is 42. The answer is B. The answer is yes. The answer is no.
Think step by step, then give the final answer.
First, reason inside <think> and </think>, then put the answer inside <answer> and </answer>.
<think>The tiles show the sky at the top and the grass at the bottom.</think><answer>3, 1, 2</answer>
The tiles of the image have been shuffled. Tile 1, Tile 2, Tile 3, Tile 4, Tile 5, Tile 6.
Tile 7, Tile 8 and Tile 9 complete the three by three grid.
Arrange the tiles into the original layout and give the tile indices in raster order, separated by commas.
For example: 4, 2, 9, 1, 7, 3, 8, 6, 5.
The video has been cut into clips. Clip 1, Clip 2, Clip 3, Clip 4, Clip 5, Clip 6.
Order the clips in time, from the earliest to the latest.
The points are marked with red circles and numbers. Order the points from the nearest to the farthest.
Which point is closer to the camera, point 1 or point 2?
Solve the problem: if x + 3 = 7, then x = 4. The area of a square with side 5 is 25.
The sum of 12 and 30 is 42; the product of 6 and 7 is also 42.
Read the text in the image. The sign says "Open from 9 to 5, Monday to Friday."
Count the apples on the table: one, two, three, four, five, six, seven, eight, nine, ten.
Find the bounding box of the dog: [120, 45, 380, 290].
Options: A. a bird B. a plane C. a train D. a boat. Answer with the option letter.
The model sees the picture, reads the question, and writes a short answer.
Training with rewards teaches the model to reason about what it sees before it answers.
Each example has a prompt, an image or a video, and a reference answer that the reward checks.
Hello, world! This is a small test of the tokenizer: it splits text into tokens and back again.
Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100 and 2025 appear in many questions.
It's a sunny day; we're going to the park, and they'll meet us there at 10:30.
The quick brown fox jumps over the lazy dog. A large green tree grows beside the river.
Mountains, rivers, forests, cities, streets, houses, cars, boats, birds and flowers.
The system prompt sets the rules, the user asks a question, and the assistant answers the user.
user
assistant
system
system, user, assistant; system, user, assistant; the user and the assistant take turns.
Left, right, top, bottom, above, below, near, far, front, back, inside, outside.
"""
