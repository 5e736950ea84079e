"""A small staff-handbook corpus with two hand-written questions per passage, for the re-ranker tests."""

PASSAGES = [
    ("Working hours. The office opens at 8:00 and closes at 18:00 from Monday to Friday. Staff may start between "
     "8:00 and 10:00 as long as they work seven and a half hours a day, with at least thirty minutes for lunch.",
     ["When does the office open and close?", "How long is the working day?"]),
    ("Remote work. After their first three months, employees may work from home up to two days a week, agreed "
     "with their manager in advance. The company lends a laptop and a headset but does not pay home internet.",
     ["How many days a week can I work from home?", "Does the company pay for internet at home?"]),
    ("Travel expenses. Train and plane tickets are booked through the travel desk. Receipts for taxis and meals "
     "must be uploaded to the finance portal within thirty days, and meals abroad are covered up to 45 euros a day.",
     ["How much can I spend on meals when travelling abroad?", "Where do I upload taxi receipts?"]),
    ("Parental leave. Each parent is entitled to sixteen weeks of paid leave after a birth or adoption. The leave "
     "can be split into blocks of at least one week, and must be requested with form HR-17 a month before.",
     ["How many weeks of parental leave do parents get?", "Can parental leave be taken in several blocks?"]),
    ("Annual holidays. Full-time staff have twenty-three working days of paid holiday a year. Up to five unused "
     "days can be carried over to the next year, but they must be taken before the end of March.",
     ["How many holiday days do full-time staff have?", "Can unused vacation days be carried over?"]),
    ("Sick leave. Employees who are ill must tell their manager before 10:00 on the first day. From the fourth "
     "day of absence a doctor's certificate is required, uploaded to the HR portal.",
     ["When do I need a doctor's certificate for sick leave?", "Who do I tell when I am ill?"]),
    ("Laptops and equipment. New laptops are requested from the IT service desk with form IT-22. Lost or stolen "
     "devices must be reported within 24 hours so that IT can lock them remotely and erase their data.",
     ["How do I request a new laptop?", "What should I do if my laptop is stolen?"]),
    ("Passwords. Passwords must be at least fourteen characters long and are never shared, not even with IT. "
     "Two-factor authentication is mandatory for email and for every system reachable from outside the office.",
     ["How long must a password be?", "Is two-factor authentication required for email?"]),
    ("Training budget. Each employee has 1,200 euros a year for courses, conferences and books related to their "
     "job. Requests above that amount need the approval of the department director.",
     ["How much money is there for training each year?", "Who approves training costs above the budget?"]),
    ("Canteen. The canteen on the ground floor serves breakfast from 7:30 and lunch from 12:00 to 15:00. "
     "Vegetarian and gluten-free dishes are available every day, and the menu is posted each Monday.",
     ["What time is lunch served in the canteen?", "Are there vegetarian dishes in the canteen?"]),
    ("Parking. The car park has 80 places, assigned by lottery every January. Bicycles can be left in the "
     "covered rack by the main entrance, and there are showers on the first floor for those who cycle to work.",
     ["How are parking places assigned?", "Where can I leave my bicycle?"]),
    ("Performance reviews. Every employee has a review with their manager in June and a shorter follow-up in "
     "December. Objectives for the next year are agreed in the June review and recorded in the HR portal.",
     ["When are performance reviews held?", "Where are yearly objectives recorded?"]),
]
